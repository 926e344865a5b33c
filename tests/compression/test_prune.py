"""L1 / random unstructured and random structured pruning of the encoder's Linear layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression import (
    Int8DynamicQuantConfig,
    L1UnstructuredPruneConfig,
    PruneScope,
    RandomStructuredPruneConfig,
    RandomUnstructuredPruneConfig,
    compress,
    compress_chain,
    sparsity_report,
)
from tests.compression.conftest import assert_unchanged, snapshot

METHODS = [L1UnstructuredPruneConfig, RandomUnstructuredPruneConfig, RandomStructuredPruneConfig]
UNSTRUCTURED = METHODS[:2]
AMOUNTS = [0.0, 0.3, 0.75, 0.99]


def _encoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {
        fqn: m for fqn, m in model.named_modules() if isinstance(m, nn.Linear) and "encoder" in fqn.split(".")
    }


def _zeros(tensor: torch.Tensor) -> int:
    return tensor.numel() - int(torch.count_nonzero(tensor))


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("method", METHODS, ids=lambda c: c.NAME)
def test_layer_scope_reaches_the_amount_in_every_layer(model, method, amount):
    before = snapshot(model)
    pruned = compress(model, method(amount=amount))
    layers = _encoder_linears(pruned)
    assert len(layers) == 12  # 2 layers x (q, k, v, attention out, intermediate, output)
    for fqn, layer in layers.items():
        rows, cols = layer.weight.shape
        if method is RandomStructuredPruneConfig:
            assert abs(_zeros(layer.weight) - round(amount * rows) * cols) <= cols, fqn
        else:
            assert abs(_zeros(layer.weight) - amount * rows * cols) <= 1, fqn
    report = sparsity_report(pruned)
    assert report["dense"]["sparsity"] == pytest.approx(amount, abs=0.02)
    assert set(report["layers"]) == set(layers)
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", METHODS, ids=lambda c: c.NAME)
def test_pruning_is_permanent(model, method):
    pruned = compress(model, method(amount=0.5))
    names = [n for n, _ in pruned.named_parameters()] + [n for n, _ in pruned.named_buffers()]
    assert not [n for n in names if n.endswith(("weight_orig", "weight_mask"))]
    assert all(not m._forward_pre_hooks for m in pruned.modules())
    for layer in _encoder_linears(pruned).values():
        assert isinstance(layer.weight, nn.Parameter)
        zeros = layer.weight[layer.weight == 0]
        assert not torch.signbit(zeros).any()  # +0.0 only, so sparse storage round-trips bit for bit


@pytest.mark.parametrize("method", METHODS, ids=lambda c: c.NAME)
def test_embeddings_layernorm_pooler_and_head_untouched(model, method):
    pruned = compress(model, method(amount=0.75))
    original = model.state_dict()
    for key, tensor in pruned.state_dict().items():
        is_encoder_linear_weight = key.removesuffix(".weight") in _encoder_linears(model)
        if not is_encoder_linear_weight:
            assert torch.equal(tensor, original[key]), key


@pytest.mark.parametrize("method", METHODS, ids=lambda c: c.NAME)
def test_include_classifier_prunes_the_head(model, method):
    pruned = compress(model, method(amount=0.5, include_classifier=True))
    assert _zeros(pruned.classifier.weight) == 0.5 * pruned.classifier.weight.numel()
    assert "classifier" in sparsity_report(pruned, include_classifier=True)["layers"]


@pytest.mark.parametrize("amount", [0.3, 0.75])
@pytest.mark.parametrize("method", UNSTRUCTURED, ids=lambda c: c.NAME)
def test_global_scope_reaches_the_amount_overall(model, method, amount):
    pruned = compress(model, method(amount=amount, scope="global"))
    report = sparsity_report(pruned)
    total = report["dense"]["numel"]
    assert abs(total - report["dense"]["nonzero"] - amount * total) <= 1
    shares = [layer["sparsity"] for layer in report["layers"].values()]
    assert max(shares) - min(shares) > 0.005  # one threshold, so layers differ


def test_global_l1_uses_one_threshold(model):
    pruned = compress(model, L1UnstructuredPruneConfig(amount=0.6, scope=PruneScope.GLOBAL))
    kept, cut = [], []
    for fqn, layer in _encoder_linears(pruned).items():
        weight = _encoder_linears(model)[fqn].weight.detach().abs()
        kept.append(weight[layer.weight != 0])
        cut.append(weight[layer.weight == 0])
    assert torch.cat(kept).min() >= torch.cat(cut).max()


def test_l1_cuts_the_smallest_weights_per_layer(model):
    pruned = compress(model, L1UnstructuredPruneConfig(amount=0.5))
    for fqn, layer in _encoder_linears(pruned).items():
        weight = _encoder_linears(model)[fqn].weight.detach().abs()
        assert weight[layer.weight != 0].min() >= weight[layer.weight == 0].max(), fqn


@pytest.mark.parametrize("method", [RandomUnstructuredPruneConfig, RandomStructuredPruneConfig])
def test_seeded_random_pruning_repeats(model, method):
    first = compress(model, method(amount=0.5, seed=7))
    again = compress(model, method(amount=0.5, seed=7))
    other = compress(model, method(amount=0.5, seed=8))
    weights = [(_encoder_linears(m)) for m in (first, again, other)]
    assert all(torch.equal(weights[0][k].weight, weights[1][k].weight) for k in weights[0])
    assert not all(torch.equal(weights[0][k].weight, weights[2][k].weight) for k in weights[0])


def test_random_pruning_leaves_the_global_generator_alone(model):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    compress(model, RandomUnstructuredPruneConfig(amount=0.5, seed=0))
    assert torch.equal(torch.rand(3), expected)


def test_structured_prunes_whole_rows(model):
    pruned = compress(model, RandomStructuredPruneConfig(amount=0.5))
    for fqn, layer in _encoder_linears(pruned).items():
        nonzero_per_row = (layer.weight != 0).sum(dim=1)
        cols = layer.weight.shape[1]
        assert set(nonzero_per_row.tolist()) == {0, cols}, fqn
        assert int((nonzero_per_row == 0).sum()) == layer.weight.shape[0] // 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"amount": 1.0}, ValueError, r"amount must be in \[0, 0.99\]"),
        ({"amount": -0.1}, ValueError, "amount must be in"),
        ({"amount": "0.5"}, TypeError, "amount must be a float"),
        ({"amount": True}, TypeError, "amount must be a float"),
        ({"scope": "model"}, ValueError, "scope must be one of 'layer', 'global'"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"include_classifier": 1}, TypeError, "include_classifier must be a bool"),
    ],
)
@pytest.mark.parametrize("method", METHODS, ids=lambda c: c.NAME)
def test_config_validation(method, kwargs, error, match):
    with pytest.raises(error, match=match):
        method(**kwargs)


def test_structured_global_is_rejected():
    with pytest.raises(ValueError, match="scope must be 'layer' for structured pruning, got 'global'"):
        RandomStructuredPruneConfig(amount=0.5, scope="global")


def test_scope_accepts_strings():
    assert L1UnstructuredPruneConfig(scope="global").scope is PruneScope.GLOBAL


def test_pruning_a_quantized_model_is_rejected(model):
    quant = compress(model, Int8DynamicQuantConfig())
    with pytest.raises(TypeError, match="model must be pruned before it is quantized"):
        compress(quant, L1UnstructuredPruneConfig())


def test_model_without_encoder_is_rejected():
    with pytest.raises(ValueError, match="model must contain nn.Linear layers inside an 'encoder'"):
        compress(nn.Sequential(nn.Linear(4, 4)), L1UnstructuredPruneConfig())


def test_sparsity_report_on_pruned_quant(model):
    pq = compress_chain(model, [L1UnstructuredPruneConfig(amount=0.75), Int8DynamicQuantConfig()])
    report = sparsity_report(pq)
    assert report["dense"]["sparsity"] >= 0.75  # int8 rounding can only add zeros
    assert len(report["layers"]) == 12
    float_report = sparsity_report(model)
    assert report["total"]["numel"] == float_report["total"]["numel"]
    assert float_report["dense"]["sparsity"] == 0.0
