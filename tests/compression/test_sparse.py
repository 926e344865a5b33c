"""Bitmask and CSR storage of pruned weights, and the packed state dict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from compression import (
    Int8DynamicQuantConfig,
    L1UnstructuredPruneConfig,
    SparseLayout,
    choose_layout,
    compress,
    compress_chain,
    decode,
    encode,
    layout_nbytes,
    pack_state_dict,
    to_int8_linear,
    unpack_state_dict,
)
from tests.compression.conftest import logits, snapshot
from tests.conftest import tiny_classifier

LAYOUTS = [SparseLayout.DENSE, SparseLayout.BITMASK, SparseLayout.CSR]


def _sparse(shape: tuple[int, int], density: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        dense = torch.randint(1, 128, shape, generator=gen, dtype=torch.int8)
        dense = torch.where(torch.rand(shape, generator=gen) < 0.5, -dense, dense)
    else:
        dense = torch.randn(shape, generator=gen).clamp_min(1e-3) * torch.sign(
            torch.randn(shape, generator=gen)
        )
        dense = dense.to(dtype)
    keep = torch.rand(shape, generator=gen) < density
    return torch.where(keep, dense, torch.zeros((), dtype=dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.25, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 96)])
def test_encode_decode_is_exact(shape, density, dtype, layout):
    weight = _sparse(shape, density, dtype)
    parts = encode(weight, layout)
    assert parts.layout is layout and parts.shape == shape
    assert all(isinstance(t, torch.Tensor) for t in parts.tensors.values())
    out = decode(parts)
    assert out.dtype == dtype and out.shape == weight.shape
    assert torch.equal(out.view(torch.uint8), weight.view(torch.uint8))  # bit for bit
    nnz = int(torch.count_nonzero(weight))
    assert parts.nbytes == layout_nbytes(layout, shape, nnz, weight.element_size())


def test_bitmask_and_csr_part_dtypes():
    weight = _sparse((64, 96), 0.25, torch.float32)
    bitmask = encode(weight, "bitmask").tensors
    assert bitmask["mask"].dtype == torch.uint8 and bitmask["mask"].numel() == 64 * 96 // 8
    csr = encode(weight, "csr").tensors
    assert csr["crow"].dtype == torch.int32 and csr["col"].dtype == torch.int16


def test_wide_matrices_use_int32_columns():
    weight = _sparse((2, 40_000), 0.01, torch.float32)
    parts = encode(weight, SparseLayout.CSR)
    assert parts.tensors["col"].dtype == torch.int32
    assert torch.equal(decode(parts), weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
@pytest.mark.parametrize("density", [0.001, 0.03, 0.05, 0.08, 0.25, 0.5, 0.8, 0.9, 0.99])
def test_choose_layout_picks_the_measured_smallest(density, dtype):
    weight = _sparse((96, 256), density, dtype, seed=1)
    measured = {layout: encode(weight, layout).nbytes for layout in LAYOUTS}
    nnz = int(torch.count_nonzero(weight))
    chosen = choose_layout(tuple(weight.shape), nnz, weight.element_size())
    assert measured[chosen] == min(measured.values())
    assert encode(weight).layout is chosen


def test_bitmask_csr_crossover_on_a_bert_layer():
    # int16 indices: CSR costs 2 bytes per nonzero, the mask 1/8 byte per element -> crossover at 1/16.
    shape = (768, 3072)
    numel = shape[0] * shape[1]
    assert choose_layout(shape, int(numel * 0.055), 4) is SparseLayout.CSR
    assert choose_layout(shape, int(numel * 0.07), 4) is SparseLayout.BITMASK
    assert choose_layout(shape, int(numel * 0.25), 1) is SparseLayout.BITMASK  # pruned-quant-75
    assert choose_layout(shape, int(numel * 0.98), 1) is SparseLayout.DENSE


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((3, 4, 5), 1, 4), "shape must be"),
        (((3, 4), 13, 4), "nnz must be in"),
        (((3, 4), 1, 0), "value_bytes must be positive"),
    ],
)
def test_choose_layout_validates(args, match):
    with pytest.raises(ValueError, match=match):
        choose_layout(*args)


def test_encode_needs_a_matrix():
    with pytest.raises(ValueError, match="weight must be a 2-D tensor"):
        encode(torch.zeros(8))


def _models(model):
    pruned = compress(model, L1UnstructuredPruneConfig(amount=0.75))
    pruned_quant = to_int8_linear(compress(pruned, Int8DynamicQuantConfig()))
    return {"pruned": pruned, "pruned-quant": pruned_quant}


@pytest.mark.parametrize("layout", [None, SparseLayout.BITMASK, SparseLayout.CSR])
@pytest.mark.parametrize("kind", ["pruned", "pruned-quant"])
def test_pack_unpack_round_trip_through_safetensors(model, batch, tmp_path, kind, layout):
    source = _models(model)[kind]
    before = snapshot(source)
    packed = pack_state_dict(source, layout)
    assert all(isinstance(t, torch.Tensor) for t in packed.values())
    dense_bytes = sum(t.nbytes for t in source.state_dict().values())
    assert sum(t.nbytes for t in packed.values()) < dense_bytes
    save_file({k: t.contiguous() for k, t in packed.items()}, tmp_path / "model.safetensors")
    state = unpack_state_dict(load_file(tmp_path / "model.safetensors"))
    assert state.keys() == before.keys()
    for key, tensor in before.items():
        assert torch.equal(state[key].view(torch.uint8), tensor.view(torch.uint8)), key
    fresh = tiny_classifier(seed=1)
    skeleton = to_int8_linear(compress(fresh, Int8DynamicQuantConfig())) if kind == "pruned-quant" else fresh
    skeleton.load_state_dict(state)
    assert torch.equal(logits(skeleton, batch), logits(source, batch))


def test_pack_keys_and_pass_through(model):
    pruned_quant = _models(model)["pruned-quant"]
    packed = pack_state_dict(pruned_quant)
    key = "bert.encoder.layer.0.intermediate.dense.weight_int8"
    assert key not in packed
    assert packed[f"{key}.__mask"].dtype == torch.uint8
    assert packed[f"{key}.__values"].dtype == torch.int8
    assert packed[f"{key}.__shape"].tolist() == [64, 32]
    # Dense tensors (embeddings, the unpruned head and pooler, scales) pass through as the same objects.
    state = pruned_quant.state_dict()
    for name in [
        "bert.embeddings.word_embeddings.weight_uint8",
        "classifier.weight_int8",
        "bert.pooler.dense.scale",
    ]:
        assert packed[name].data_ptr() == state[name].data_ptr()


def test_forced_csr_layout(model):
    packed = pack_state_dict(_models(model)["pruned"], SparseLayout.CSR)
    assert "bert.encoder.layer.1.output.dense.weight.__crow" in packed
    assert not [k for k in packed if k.endswith(".__mask")]


def test_dense_model_packs_to_its_state_dict(model):
    packed = pack_state_dict(model)
    assert packed.keys() == model.state_dict().keys()


def test_pack_rejects_packed_int8_layers(model):
    quant = compress_chain(model, [Int8DynamicQuantConfig()])
    with pytest.raises(TypeError, match="model must hold Int8Linear"):
        pack_state_dict(quant)


def test_unpack_rejects_incomplete_entries(model):
    packed = pack_state_dict(_models(model)["pruned"])
    key = "bert.encoder.layer.0.output.dense.weight"
    missing = {k: v for k, v in packed.items() if k != f"{key}.__values"}
    with pytest.raises(ValueError, match="tensors must hold every part of a bitmask weight"):
        unpack_state_dict(missing)
    stray = {k: v for k, v in packed.items() if k != f"{key}.__shape"}
    with pytest.raises(ValueError, match="tensors must hold complete sparse entries"):
        unpack_state_dict(stray)
