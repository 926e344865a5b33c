"""SparseLinear: pruned layers kept in sparse form as plain buffers, bit-exact with the dense model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from benchmarks.sparse_kernels import csr_kernel
from benchmarks.sparse_kernels import main as bench_main
from compression import (
    Int8DynamicQuantConfig,
    Int8Linear,
    L1UnstructuredPruneConfig,
    SparseLayout,
    SparseLinear,
    compress,
    densify_,
    encode,
    load_packed_state_dict_,
    pack_state_dict,
    to_int8_linear,
    to_sparse_linear,
)
from tests.compression.conftest import assert_unchanged, logits, snapshot
from tests.conftest import tiny_classifier

KINDS = ["fp32", "int8"]
LAYOUTS = [SparseLayout.BITMASK, SparseLayout.CSR]


def _pruned(model: nn.Module, kind: str) -> nn.Module:
    """The dense reference: L1-pruned at 75%, then every Linear int8 as `Int8Linear` for the int8 case."""
    pruned = compress(model, L1UnstructuredPruneConfig(amount=0.75))
    every = Int8DynamicQuantConfig(fp32_layers=())
    return to_int8_linear(compress(pruned, every)) if kind == "int8" else pruned


def _sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    return {fqn: m for fqn, m in model.named_modules() if isinstance(m, SparseLinear)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_model_equals_dense_pruned_model(model, batch, kind, layout, int8_matmul):
    dense = _pruned(model, kind)
    before = snapshot(dense)
    sparse = to_sparse_linear(dense, layout)
    assert_unchanged(dense, before)
    layers = _sparse_layers(sparse)
    assert len(layers) == 2 * 6  # every encoder Linear of the two layers; pooler and head stay dense
    assert all(m.layout is layout and (m.scale is not None) == (kind == "int8") for m in layers.values())
    assert torch.equal(logits(sparse, batch), logits(dense, batch))  # bit-exact, not just close
    for fqn, layer in layers.items():
        reference = dense.get_submodule(fqn)
        expected = reference.dequantized_weight() if kind == "int8" else reference.weight.detach()
        assert torch.equal(layer.dense_weight().view(torch.int32), expected.view(torch.int32)), fqn


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_densify_round_trip(model, batch, kind, layout):
    dense = _pruned(model, kind)
    sparse = to_sparse_linear(dense, layout)
    densify_(sparse)
    assert not _sparse_layers(sparse)
    assert sparse.state_dict().keys() == dense.state_dict().keys()
    for key, tensor in dense.state_dict().items():
        assert torch.equal(sparse.state_dict()[key], tensor), key
    layer_type = Int8Linear if kind == "int8" else nn.Linear
    assert type(sparse.bert.encoder.layer[0].output.dense) is layer_type
    assert torch.equal(logits(sparse, batch), logits(dense, batch))


@pytest.mark.parametrize("kind", KINDS)
def test_tensors_are_plain_buffers(model, kind):
    sparse = to_sparse_linear(_pruned(model, kind), SparseLayout.BITMASK)
    layer = sparse.bert.encoder.layer[0].intermediate.dense
    assert list(layer.parameters()) == []
    expected = {"mask", "values", "bias"} | ({"scale"} if kind == "int8" else set())
    assert {name for name, _ in layer.named_buffers()} == expected
    assert layer.values.dtype == (torch.int8 if kind == "int8" else torch.float32)
    assert layer.mask.dtype == torch.uint8
    csr = SparseLinear.from_dense(_pruned(model, kind).bert.encoder.layer[0].intermediate.dense, "csr")
    assert {name for name, _ in csr.named_buffers()} == expected - {"mask"} | {"crow", "col"}


def test_forward_does_not_write_its_buffers(model, batch):
    sparse = to_sparse_linear(_pruned(model, "int8"))
    before = {k: v.clone() for k, v in sparse.named_buffers()}
    logits(sparse, batch)
    for key, tensor in sparse.named_buffers():
        assert torch.equal(tensor, before[key]), key


@pytest.mark.parametrize("layout", [None, SparseLayout.BITMASK, SparseLayout.CSR])
@pytest.mark.parametrize("kind", KINDS)
def test_load_packed_state_dict_keeps_packed_tensors(model, batch, tmp_path, kind, layout):
    dense = _pruned(model, kind)
    save_file({k: t.contiguous() for k, t in pack_state_dict(dense, layout).items()}, tmp_path / "w.st")
    tensors = load_file(tmp_path / "w.st")
    skeleton = tiny_classifier(seed=1)
    skeleton = to_int8_linear(skeleton) if kind == "int8" else skeleton
    load_packed_state_dict_(skeleton, tensors)
    layers = _sparse_layers(skeleton)
    assert len(layers) == 12
    for fqn, layer in layers.items():
        key = f"{fqn}.weight_int8" if kind == "int8" else f"{fqn}.weight"
        assert layer.values is tensors[f"{key}.__values"]  # held as loaded: no decode, no copy
    assert torch.equal(logits(skeleton, batch), logits(dense, batch))
    assert torch.equal(logits(skeleton, batch), logits(to_sparse_linear(dense, layout), batch))


def test_load_packed_state_dict_refuses_what_does_not_fit(model):
    tensors = pack_state_dict(_pruned(model, "fp32"), SparseLayout.BITMASK)
    key = "bert.encoder.layer.0.intermediate.dense.weight"
    with pytest.raises(ValueError, match="must be the weight of an nn.Linear or weight_int8"):
        load_packed_state_dict_(to_int8_linear(tiny_classifier()), tensors)  # fp32 weights, int8 skeleton
    incomplete = {k: v for k, v in tensors.items() if k != f"{key}.__values"}
    with pytest.raises(ValueError, match="got no .*__values"):
        load_packed_state_dict_(tiny_classifier(), incomplete)
    short = {**tensors, f"{key}.__values": tensors[f"{key}.__values"][:-1]}
    with pytest.raises(ValueError, match="values must hold one entry per stored nonzero"):
        load_packed_state_dict_(tiny_classifier(), short)
    extra = {**tensors, "bert.unknown": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected \\['bert.unknown'\\]"):
        load_packed_state_dict_(tiny_classifier(), extra)
    wider = tiny_classifier()
    wider.bert.encoder.layer[0].intermediate.dense = nn.Linear(32, 65)
    with pytest.raises(ValueError, match="must have shape \\(65, 32\\)"):
        load_packed_state_dict_(wider, tensors)


def test_sparse_linear_validates_its_parts():
    weight = torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0]])
    parts = encode(weight, "bitmask")
    with pytest.raises(ValueError, match="scale must be given exactly for int8 values"):
        SparseLinear(parts, scale=torch.ones(2))
    with pytest.raises(ValueError, match="bias must be float32 of shape \\(2,\\)"):
        SparseLinear(parts, bias=torch.ones(3))
    with pytest.raises(ValueError, match="parts must be in a sparse layout"):
        SparseLinear(encode(weight, "dense"))
    with pytest.raises(TypeError, match="module must be an nn.Linear or Int8Linear"):
        SparseLinear.from_dense(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="layout must be 'bitmask', 'csr' or None"):
        to_sparse_linear(tiny_classifier(), "dense")
    layer = SparseLinear(parts, bias=torch.tensor([0.5, -0.5]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(layer(x), torch.tensor([[3.5, 1.5]]))


def test_dense_layers_that_would_not_shrink_stay_dense(model):
    sparse = to_sparse_linear(model)  # unpruned float weights: sparse storage saves nothing
    assert not _sparse_layers(sparse)


def test_csr_kernel_shares_the_stored_parts():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=gen)
    layer = SparseLinear(encode(torch.where(torch.rand(48, 64, generator=gen) < 0.2, weight, 0.0), "csr"))
    weight, shared = csr_kernel(layer)
    assert shared == {"crow": True, "col": False, "col_after_widening": True, "values": True}
    x = torch.randn(5, 64)
    torch.testing.assert_close(torch.mm(weight, x.T).T, layer(x))


def test_bench_runs_on_a_small_layer(capsys):
    args = ["--rows", "64", "--cols", "32", "--sweep", "0.9", "--repeats", "1", "--json"]
    assert bench_main(args) == 0
    assert '"csr_sweep"' in capsys.readouterr().out.splitlines()[-1]
