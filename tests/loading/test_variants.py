"""Compressed variant artifacts: built from a base, loaded exactly, pruned ones stored compact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression import Int8DynamicQuantConfig, SparseLinear, build_variant, parse_variant, to_int8_linear
from loading.artifact import WEIGHTS_FILE, ArtifactError, folder_bytes, load_tokenizer, read_variant_info
from loading.build import build_variants, main
from loading.checkpoint import load_model
from loading.zerocopy import extract_tensors

NAMES = ["quant", "pruned-50", "pruned-quant-50"]
TEXTS = ["pruned weights stay packed", "in shared memory, decoded per call"]


@pytest.fixture(scope="module")
def variants(tiny_artifact, tmp_path_factory) -> Path:
    """The three variants built from the tiny artifact, under one folder."""
    out = tmp_path_factory.mktemp("variants")
    infos = build_variants(tiny_artifact, NAMES, out)
    assert [i.name for i in infos] == NAMES
    return out


def _logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def _in_memory(tiny_artifact: Path, name: str) -> torch.nn.Module:
    """What the build compressed, before it was written: Int8Linear form for int8 variants."""
    compressed = build_variant(load_model(tiny_artifact), name)
    quantized = any(cfg.NAME == "quant" for cfg in parse_variant(name))
    return to_int8_linear(compressed) if quantized else compressed


@pytest.mark.parametrize("name", NAMES)
def test_loaded_variant_equals_the_in_memory_model(variants, tiny_artifact, tokenizer, name):
    loaded = load_model(variants / name)
    assert torch.equal(_logits(loaded, tokenizer), _logits(_in_memory(tiny_artifact, name), tokenizer))
    sparse = {fqn: m for fqn, m in loaded.named_modules() if isinstance(m, SparseLinear)}
    if name.startswith("pruned"):
        assert len(sparse) == 12  # every encoder Linear of the two layers stays packed
        int8 = {fqn for fqn in sparse if "quant" in name and not Int8DynamicQuantConfig().keeps_fp32(fqn)}
        assert all((m.scale is not None) == (fqn in int8) for fqn, m in sparse.items())


@pytest.mark.parametrize("name", NAMES)
def test_variant_json_records_true_sizes(variants, name):
    info = read_variant_info(variants / name)
    assert info.name == name and info.parent == "tiny"
    assert info.size_bytes == folder_bytes(variants / name)
    assert info.weights_bytes == (variants / name / WEIGHTS_FILE).stat().st_size


@pytest.mark.parametrize("name", ["pruned-50", "pruned-quant-50"])
def test_pruned_arena_holds_the_compact_form(variants, tiny_artifact, name):
    base_arena = extract_tensors(load_model(tiny_artifact))[1].nbytes
    loaded = load_model(variants / name)
    arena = extract_tensors(loaded)[1].nbytes
    layers = [m for m in loaded.modules() if isinstance(m, SparseLinear)]
    assert layers
    fp32_bytes = sum(m.in_features * m.out_features * 4 for m in layers)  # what base holds for them
    packed_bytes = sum(m.parts().nbytes for m in layers)
    # The arena shrinks by at least what sparse storage saves, less 64-byte alignment of the extra parts.
    assert base_arena - arena >= fp32_bytes - packed_bytes - 3 * 64 * len(layers)


@pytest.mark.parametrize("name", ["quant", "pruned-quant-50"])
def test_int8_arena_holds_8bit_embeddings_too(variants, name):
    from compression import Int8Embedding

    loaded = load_model(variants / name)
    tables = [m for m in loaded.modules() if isinstance(m, Int8Embedding)]
    assert len(tables) == 3  # word, position and token-type embeddings
    assert all(m.weight_uint8.dtype == torch.uint8 for m in tables)
    # What the object store holds is what the weights file holds, plus alignment and page padding.
    arena = extract_tensors(loaded)[1].nbytes
    weights = read_variant_info(variants / name).weights_bytes
    assert arena <= weights + 64 * 200 + 3 * 4096


def test_attach_in_a_ray_task_gives_load_model_logits(ray_session, variants, tokenizer):
    @ray_session.remote(num_cpus=0)
    def probe(variant: str, model_dir: str, kernels: list[tuple[str, str]]) -> list[dict]:
        import torch.ao.nn.quantized.dynamic as nnqd

        from compression import Int8Linear, SparseLinear
        from loading.store import attach

        results = []
        for int8_kernel, sparse_kernel in kernels:
            attached = attach(variant, model_dir, int8_kernel=int8_kernel, sparse_kernel=sparse_kernel)
            batch = attached.tokenizer(TEXTS)
            with torch.inference_mode():
                logits = attached.model(**batch).logits
            kinds = [type(m) for m in attached.model.modules()]
            results.append(
                {
                    "logits": logits.numpy(),
                    "loaded_from": attached.loaded_from,
                    "arena_bytes": attached.arena_bytes,
                    "sparse": sum(k is SparseLinear for k in kinds),
                    "sparse_int8": sum(
                        isinstance(m, SparseLinear) and m.scale is not None for m in attached.model.modules()
                    ),
                    "int8": sum(k is Int8Linear for k in kinds),
                    "fbgemm": sum(k is nnqd.Linear for k in kinds),
                }
            )
        return results

    kernels = [("shared", "shared"), ("shared", "dense"), ("fbgemm", "shared"), ("fbgemm", "dense")]
    jobs = {name: probe.remote(f"test-variants-{name}", str(variants / name), kernels) for name in NAMES}
    for name, job in jobs.items():
        shared, dense, fbgemm_shared, fbgemm_dense = ray_session.get(job)
        loaded = load_model(variants / name)
        expected = _logits(loaded, tokenizer)
        assert torch.equal(torch.tensor(shared["logits"]), expected), name
        assert torch.equal(torch.tensor(dense["logits"]), expected), name  # densify_ changes no number
        assert shared["arena_bytes"] == extract_tensors(loaded)[1].nbytes
        if name.startswith("pruned"):
            assert (shared["loaded_from"], dense["loaded_from"]) == (
                "object-store-zero-copy",
                "object-store-zero-copy+densified",
            )
            assert (shared["sparse"], dense["sparse"]) == (12, 0)
        if "quant" in name:
            assert fbgemm_dense["loaded_from"].endswith("+fbgemm-prepack")
            # densified first, so fbgemm packs every int8 layer; shared leaves SparseLinear alone
            assert (fbgemm_dense["sparse"], fbgemm_dense["int8"]) == (0, 0)
            assert fbgemm_shared["sparse"] == shared["sparse"] and fbgemm_shared["int8"] == 0
            assert fbgemm_dense["fbgemm"] == fbgemm_shared["fbgemm"] + shared["sparse_int8"]
            # FBGEMM also quantizes activations: close to the shared kernel's logits, not equal
            torch.testing.assert_close(torch.tensor(fbgemm_dense["logits"]), expected, rtol=0, atol=1e-3)


def test_unknown_variant_is_refused_before_anything_is_written(tiny_artifact, tmp_path):
    with pytest.raises(ValueError, match="unknown variant 'pruned-100'"):
        build_variants(tiny_artifact, ["quant", "pruned-100"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_model_folder_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        build_variants(tmp_path / "nowhere", ["quant"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exits_2_with_a_message_for_a_bad_name(tiny_artifact, tmp_path, capsys):
    argv = ["--model", str(tiny_artifact), "--variants", "quant,bogus", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: unknown variant 'bogus'" in err
    assert list(tmp_path.iterdir()) == []


def test_variant_tokenizer_is_the_base_one(variants, tiny_artifact):
    texts = ["same tokens either way"]
    expected = load_tokenizer(tiny_artifact)(texts)["input_ids"]
    assert load_tokenizer(variants / "pruned-50")(texts)["input_ids"] == expected


KEPT = ("classifier", "bert.encoder.layer.1.output.dense")  # the tiny model's head and last FFN out


@pytest.mark.parametrize("pruned", [False, True], ids=["quant", "pruned-quant"])
def test_fp32_layers_stay_fp32_through_build_save_and_load(tiny_artifact, tokenizer, tmp_path, pruned):
    from torch import nn

    from compression import (
        Int8DynamicQuantConfig,
        Int8Linear,
        L1UnstructuredPruneConfig,
        compress_chain,
        pack_state_dict,
    )
    from loading.artifact import COMPRESSED_METHOD, save_artifact

    chain = [L1UnstructuredPruneConfig(amount=0.5)] if pruned else []
    chain.append(Int8DynamicQuantConfig(fp32_layers=KEPT))
    storable = to_int8_linear(compress_chain(load_model(tiny_artifact), chain))  # as loading.build stores it
    out = tmp_path / "variant"
    save_artifact(
        storable,
        load_tokenizer(tiny_artifact),
        out,
        name="variant",
        parent="tiny",
        method=COMPRESSED_METHOD,
        tensors=pack_state_dict(storable),
    )
    loaded = load_model(out)
    for fqn in KEPT:
        layer, built = loaded.get_submodule(fqn), storable.get_submodule(fqn)
        assert type(built) is nn.Linear, fqn
        if pruned and fqn.startswith("bert.encoder"):  # a pruned fp32 layer stays packed, in fp32
            assert isinstance(layer, SparseLinear) and layer.scale is None, fqn
            assert torch.equal(layer.dense_weight(), built.weight), fqn
        else:
            assert type(layer) is nn.Linear and layer.weight.dtype == torch.float32, fqn
            assert torch.equal(layer.weight, built.weight), fqn
    int8 = {
        fqn
        for fqn, m in loaded.named_modules()
        if isinstance(m, Int8Linear) or (isinstance(m, SparseLinear) and m.scale is not None)
    }
    linears = {fqn for fqn, m in load_model(tiny_artifact).named_modules() if isinstance(m, nn.Linear)}
    assert int8 == linears - set(KEPT)
    assert torch.equal(_logits(loaded, tokenizer), _logits(storable, tokenizer))
