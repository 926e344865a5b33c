"""Dynamic int8 quantization and the shareable Int8Linear / Int8Embedding forms."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from torch import nn

from compression import (
    Int8DynamicQuantConfig,
    Int8Embedding,
    Int8Linear,
    compress,
    to_dynamic_quant,
    to_int8_linear,
)
from tests.compression.conftest import assert_unchanged, logits, snapshot

LOGIT_ATOL = 0.02  # random tiny-model logits are O(0.1-1); int8 error measured < 1e-3


def _modules(model: nn.Module, kind: type) -> list[str]:
    return [fqn for fqn, m in model.named_modules() if type(m) is kind]


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_replaces_every_linear_and_stays_close(model, batch, per_channel):
    before = snapshot(model)
    quant = compress(model, Int8DynamicQuantConfig(per_channel=per_channel, fp32_layers=()))
    assert _modules(quant, nn.Linear) == []
    assert len(_modules(quant, nnqd.Linear)) == len(_modules(model, nn.Linear))
    scheme = torch.per_channel_affine if per_channel else torch.per_tensor_affine
    assert quant.classifier.weight().qscheme() == scheme
    torch.testing.assert_close(logits(quant, batch), logits(model, batch), atol=LOGIT_ATOL, rtol=0)
    assert_unchanged(model, before)


def test_quantize_is_quiet(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_dynamic_quant(to_int8_linear(compress(model, Int8DynamicQuantConfig())))
    assert [str(w.message)[:60] for w in caught if "quantiz" in str(w.message)] == []


def test_config_validates():
    with pytest.raises(TypeError, match="per_channel must be a bool"):
        Int8DynamicQuantConfig(per_channel="yes")


def test_float_to_int8_linear_is_per_channel_symmetric(model, batch):
    before = snapshot(model)
    int8 = to_int8_linear(model)
    assert _modules(int8, nn.Linear) == []
    assert len(_modules(int8, Int8Linear)) == len(_modules(model, nn.Linear))
    layer = int8.bert.encoder.layer[0].intermediate.dense
    weight = model.bert.encoder.layer[0].intermediate.dense.weight.detach()
    assert list(dict(layer.named_parameters())) == []  # plain buffers, shareable read-only
    assert set(dict(layer.named_buffers())) == {"weight_int8", "scale", "bias"}
    assert layer.weight_int8.dtype == torch.int8 and layer.scale.dtype == torch.float32
    torch.testing.assert_close(layer.scale, weight.abs().amax(dim=1) / 127)
    assert int(layer.weight_int8.abs().max()) == 127
    assert (layer.dequantized_weight() - weight).abs().max() <= layer.scale.max() / 2 + 1e-7
    torch.testing.assert_close(logits(int8, batch), logits(model, batch), atol=LOGIT_ATOL, rtol=0)
    assert_unchanged(model, before)


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_linear_round_trip_is_bit_exact(model, batch, per_channel):
    quant = compress(model, Int8DynamicQuantConfig(per_channel=per_channel))
    int8 = to_int8_linear(quant)
    back = to_dynamic_quant(int8)
    assert _modules(int8, nnqd.Linear) == [] and _modules(back, Int8Linear) == []
    for fqn in _modules(quant, nnqd.Linear):
        original, shared = quant.get_submodule(fqn).weight(), int8.get_submodule(fqn)
        assert torch.equal(shared.weight_int8, original.int_repr())
        rebuilt = back.get_submodule(fqn).weight()
        assert rebuilt.qscheme() == original.qscheme()
        assert torch.equal(rebuilt.int_repr(), original.int_repr())
        assert torch.equal(back.get_submodule(fqn).bias(), quant.get_submodule(fqn).bias())
    assert torch.equal(logits(back, batch), logits(quant, batch))
    # The shared form quantizes activations per row, FBGEMM per tensor: both stay close to float.
    torch.testing.assert_close(logits(int8, batch), logits(model, batch), atol=LOGIT_ATOL, rtol=0)


def test_to_dynamic_quant_leaves_input_alone(model):
    int8 = to_int8_linear(model)
    before = snapshot(int8)
    to_dynamic_quant(int8)
    assert_unchanged(int8, before)
    assert len(_modules(int8, Int8Linear)) > 0


def test_int8_linear_forward_and_zero_rows(int8_matmul):
    torch.manual_seed(0)
    linear = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        linear.weight[1] = 0.0
    layer = Int8Linear.from_float(linear)
    assert layer.bias is None and "bias" not in layer.state_dict()
    assert layer.scale[1] == 1.0 and not layer.weight_int8[1].any()
    x = torch.randn(3, 8)
    x[2] = 0.0  # an all-zero input row must not divide by zero
    # The integer reference: each input row quantized with its own scale, exact int64 products.
    row_scale = (x.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)
    q = torch.round(x / row_scale)
    integer = (q.long() @ layer.weight_int8.long().t()).float() * row_scale * layer.scale
    dequantized = F.linear(x, layer.weight_int8.float() * layer.scale[:, None])
    out = layer(x)
    torch.testing.assert_close(out, integer if int8_matmul == "int_mm" else dequantized, atol=1e-6, rtol=1e-6)
    assert not out[:, 1].any() and not out[2].any()
    torch.testing.assert_close(integer, dequantized, atol=0.02, rtol=0)  # activation rounding only
    assert torch.equal(layer.to_dynamic().weight().int_repr(), layer.weight_int8)


@pytest.mark.parametrize("embeddings", [True, False])
def test_embeddings_are_quantized_per_row_unless_asked_not_to(model, batch, embeddings):
    quant = compress(model, Int8DynamicQuantConfig(embeddings=embeddings))
    tables = ["bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings"]
    kinds = {type(quant.get_submodule(fqn)) for fqn in tables}
    assert kinds == ({Int8Embedding} if embeddings else {nn.Embedding})
    torch.testing.assert_close(logits(quant, batch), logits(model, batch), atol=LOGIT_ATOL, rtol=0)


def test_int8_embedding_matches_torch_ao_and_is_plain_buffers():
    torch.manual_seed(0)
    table = nn.Embedding(50, 8)
    table.weight.data[3] = 0.0  # an all-zero row must stay exactly zero
    qconfig = torch.ao.quantization.float_qparams_weight_only_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = torch.ao.quantization.quantize_dynamic(nn.Sequential(table), {nn.Embedding: qconfig})[0]
        expected = reference.weight().dequantize()
    shared = Int8Embedding.from_quantized(reference)
    assert shared.weight_uint8.dtype == torch.uint8 and not list(shared.parameters())
    assert torch.equal(shared.dequantized_weight(), expected)
    ids = torch.tensor([[3, 1, 49], [0, 3, 3]]).t()  # non-contiguous, as BERT passes token types
    assert torch.equal(shared(ids), expected[ids])
    assert torch.equal(shared(ids)[0, 0], torch.zeros(8))
    assert (expected - table.weight).abs().max() <= shared.scale.max() / 2 + 1e-6


def test_int8_matmul_probe_times_both_ways_and_obeys_the_override(monkeypatch):
    """`_int_mm` is used only where it is at most 1.5x fp32's time; the env var overrides the probe."""
    import compression.quantize as quantize

    timed: list[str] = []
    seconds = {"fp32": 1.0}

    def fake_best(fn, repeats):  # the probe times fp32 first, then the int8 path
        timed.append("fp32" if not timed else "int8")
        return seconds[timed[-1]]

    monkeypatch.setattr(quantize, "best_ms", fake_best)
    monkeypatch.delenv(quantize.INT8_MATMUL_ENV, raising=False)
    for ratio, fast in [(0.6, True), (1.5, True), (1.6, False), (25.0, False)]:
        seconds["int8"] = ratio
        timed.clear()
        quantize.int8_matmul_is_fast.cache_clear()
        assert quantize.int8_matmul_is_fast() is fast and timed == ["fp32", "int8"]
    monkeypatch.setenv(quantize.INT8_MATMUL_ENV, " INT_MM ")
    quantize.int8_matmul_is_fast.cache_clear()
    assert quantize.int8_matmul_is_fast() is True
    monkeypatch.setenv(quantize.INT8_MATMUL_ENV, "fast")
    quantize.int8_matmul_is_fast.cache_clear()
    with pytest.raises(ValueError, match="BERTSERVE_INT8_MATMUL must be 'int_mm' or 'dequant', got 'fast'"):
        quantize.int8_matmul_is_fast()
    quantize.int8_matmul_is_fast.cache_clear()


def test_int8_bench_times_every_kernel_against_fp32(monkeypatch, capsys):
    import json

    import benchmarks.int8_kernels as bench

    monkeypatch.setattr(bench, "SHAPES", {"tiny": (16, 32, 64)})
    assert bench.main(["--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = result["shapes"]["tiny"]
    assert set(row["ms"]) == {"fp32", "int_mm", "dequant", "fbgemm", "int8pack"}
    assert row["vs_fp32"]["fp32"] == 1.0 and all(ms > 0 for ms in row["ms"].values())
    assert isinstance(result["int8_matmul_is_fast"], bool) and result["machine"]["cpu_capability"]
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])


def test_fp32_layers_stay_float_linear_and_to_int8_linear_keeps_them(model, batch):
    kept = ("classifier", "*.layer.1.output.dense")
    cfg = Int8DynamicQuantConfig(fp32_layers=kept)
    quant = compress(model, cfg)
    floats = _modules(quant, nn.Linear)
    assert floats == ["bert.encoder.layer.1.output.dense", "classifier"]
    assert all(cfg.keeps_fp32(fqn) for fqn in floats)
    int8 = to_int8_linear(quant)
    assert _modules(int8, nn.Linear) == floats  # chosen by quantization, not re-quantized here
    assert torch.equal(int8.classifier.weight, model.classifier.weight)
    assert len(_modules(int8, Int8Linear)) == len(_modules(model, nn.Linear)) - 2
    torch.testing.assert_close(logits(int8, batch), logits(model, batch), atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("fp32_layers", [["classifier"], ("",), "classifier", (1,)])
def test_fp32_layers_must_be_a_tuple_of_patterns(fp32_layers):
    with pytest.raises(TypeError, match="fp32_layers must be a tuple of non-empty str patterns"):
        Int8DynamicQuantConfig(fp32_layers=fp32_layers)


def test_empty_int8_linears_swaps_only_the_named_layers(model):
    from compression import empty_int8_linears_

    with torch.device("meta"):
        skeleton = copy.deepcopy(model).to("meta")
        empty_int8_linears_(skeleton, {"classifier", "bert.pooler.dense"})
    assert _modules(skeleton, Int8Linear) == ["bert.pooler.dense", "classifier"]
    assert len(_modules(skeleton, nn.Linear)) == len(_modules(model, nn.Linear)) - 2


def test_fp32_layers_keep_embeddings_float_too(model):
    quant = compress(model, Int8DynamicQuantConfig(fp32_layers=("*.position_embeddings",)))
    assert _modules(quant, nn.Embedding) == ["bert.embeddings.position_embeddings"]
    assert len(_modules(quant, Int8Embedding)) == 2  # word and token-type tables
