"""Gradual magnitude pruning and structured pruning on a tiny random BERT: exact, bounded, shrinking."""

from __future__ import annotations

import pytest
import torch

from compression.gradual import MagnitudePruner, cubic_sparsity
from compression.structured import StructuredPruner, keep_layers_
from loading.bert import BertConfig, BertForSequenceClassification


def _tiny(layers: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64
    )
    model = BertForSequenceClassification(config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_cubic_schedule_rises_fast_then_settles_on_the_target():
    values = [cubic_sparsity(step, 0.8, start=10, end=110) for step in range(0, 131)]
    assert values[0] == values[10] == 0.0 and values[110] == values[130] == pytest.approx(0.8)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[60] > 0.8 / 2  # past halfway in sparsity at halfway in steps: cubic, not linear
    with pytest.raises(ValueError, match="start < end"):
        cubic_sparsity(5, 0.5, start=10, end=10)


def test_magnitude_pruner_zeroes_the_smallest_and_masks_only_grow():
    model = _tiny()
    pruner = MagnitudePruner(model)
    assert len(pruner.layers) == 2 * 6  # q, k, v, attention out, FFN in, FFN out per layer
    layer = pruner.layers[0]
    smallest = layer.weight.abs().flatten().argsort()[: int(0.3 * layer.weight.numel())]
    pruner.prune_to_(0.3)
    assert torch.all(layer.weight.flatten()[smallest] == 0)
    before = [m.clone() for m in pruner.masks]
    with torch.no_grad():
        layer.weight.add_(1.0)  # an optimizer step moves pruned weights too
    pruner.apply_masks_()
    assert float((layer.weight == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    pruner.prune_to_(0.6)
    for old, new in zip(before, pruner.masks, strict=True):
        assert not torch.any(new & ~old)  # nothing pruned comes back
    for m in pruner.layers:
        assert float((m.weight == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    assert model.classifier.weight.ne(0).all()  # the head is not pruned


def test_structured_shrink_is_exact_and_makes_every_matrix_smaller():
    model = _tiny().eval()
    pruner = StructuredPruner(model, head_size=8)
    model(**_batch()).logits.sum().backward()
    pruner.accumulate_()
    pruner.prune_to_(0.5)
    with torch.no_grad():
        masked = model(**_batch()).logits
    heads, widths = pruner.shrink_(model)
    assert heads == [2, 2] and widths == [32, 32]
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (16, 32)
    assert layer.attention.output.dense.weight.shape == (32, 16)
    assert layer.intermediate.dense.weight.shape == (32, 32) and layer.output.dense.weight.shape == (32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(**_batch()).logits, masked, atol=1e-5, rtol=1e-5)


def test_structured_keeps_the_most_important_heads_and_at_least_one():
    model = _tiny()
    pruner = StructuredPruner(model, head_size=8)
    pruner.layers[0].head_score = torch.tensor([0.1, 5.0, 0.2, 3.0])
    pruner.prune_to_(0.5)
    assert pruner.layers[0].heads.tolist() == [False, True, False, True]
    pruner.prune_to_(0.99)
    assert pruner.layers[0].heads.tolist() == [False, True, False, False]
    assert int(pruner.layers[1].neurons.sum()) == 1


def test_keep_layers_drops_the_top_layers():
    model = _tiny(layers=3)
    bottom = model.bert.encoder.layer[0]
    keep_layers_(model, 1)
    assert len(model.bert.encoder.layer) == 1 and model.bert.encoder.layer[0] is bottom
    with pytest.raises(ValueError, match="count must be in 1..1"):
        keep_layers_(model, 2)


def test_structured_refuses_int8_layers():
    from compression import Int8DynamicQuantConfig, compress, to_int8_linear

    quantized = to_int8_linear(compress(_tiny(), Int8DynamicQuantConfig()))
    with pytest.raises(TypeError, match="prune before quantizing"):
        StructuredPruner(quantized, head_size=8)
