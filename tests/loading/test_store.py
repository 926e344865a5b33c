"""Model store: weights owned by a detached actor, attached zero-copy and read-only by others."""

from __future__ import annotations

import pytest
import torch

from loading.artifact import load_tokenizer, save_artifact

TEXTS = ["the store owns the weights", "replicas only map them"]


@pytest.fixture(scope="module")
def wide_artifact(tmp_path_factory, tokenizer):
    """A classifier with ~35 MB of weights: large enough to see in a process's memory."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
        num_labels=3,
    )
    out = tmp_path_factory.mktemp("wide") / "wide"
    save_artifact(BertForSequenceClassification(config).eval(), tokenizer, out, name="wide")
    return out


def _remote_probe(ray, variant, model_dir, texts):
    @ray.remote(num_cpus=0)
    def probe():
        import numpy as np

        from loading.store import attach

        attached = attach(variant, model_dir)
        arena_lo = min(t.data_ptr() for t in attached.model.parameters())
        maps = open("/proc/self/maps").read().splitlines()
        region = next(
            line
            for line in maps
            if int(line.split()[0].split("-")[0], 16) <= arena_lo < int(line.split()[0].split("-")[1], 16)
        )
        batch = attached.tokenizer(texts)
        with torch.inference_mode():
            logits = attached.model(**batch).logits
        return {
            "logits": logits.numpy(),
            "region": region,
            "attach_ms": attached.attach_ms,
            "np": np.__name__,
        }

    return ray.get(probe.remote())


def test_attach_is_bit_identical_and_maps_shared_memory(ray_session, tiny_artifact, tokenizer):
    from loading.checkpoint import load_model

    result = _remote_probe(ray_session, "tiny", str(tiny_artifact), TEXTS)
    model = load_model(tiny_artifact)
    with torch.inference_mode():
        expected = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    assert torch.equal(torch.tensor(result["logits"]), expected)
    # the weights live in the object store's shared-memory mapping, not in private heap
    assert "plasma" in result["region"] or "/dev/shm" in result["region"], result["region"]


def test_store_keeps_one_copy_per_variant(ray_session, tiny_artifact):
    from loading.model_store import model_store

    _remote_probe(ray_session, "tiny", str(tiny_artifact), TEXTS)
    store = model_store()
    first = ray_session.get(store.ensure.remote("tiny", str(tiny_artifact)))
    second = ray_session.get(store.ensure.remote("tiny", str(tiny_artifact)))
    assert first["arena"] == second["arena"]
    with pytest.raises(ray_session.exceptions.RayTaskError, match="already stored"):
        ray_session.get(store.ensure.remote("tiny", "/elsewhere"))


def test_write_to_shared_weights_is_refused(ray_session, tiny_artifact):
    @ray_session.remote(num_cpus=0, max_retries=0)
    def vandal():
        from loading.store import attach

        attached = attach("tiny", str(tiny_artifact))
        attached.model.classifier.weight.data.fill_(1e9)  # faults: the pages are read-only
        return "wrote"

    @ray_session.remote(num_cpus=0)
    def reader():
        from loading.store import attach

        return attach("tiny", str(tiny_artifact)).model.classifier.weight.abs().max().item()

    before = ray_session.get(reader.remote())
    with pytest.raises(ray_session.exceptions.WorkerCrashedError):
        ray_session.get(vandal.remote())
    after = ray_session.get(reader.remote())
    assert after == before < 1e9


def test_second_replica_does_not_double_weight_memory(ray_session, wide_artifact, tiny_artifact):
    @ray_session.remote(num_cpus=0)
    class Replica:
        def attach_and_run(self):
            import psutil

            from loading.store import attach

            attach("tiny", str(tiny_artifact))  # warm the code path: imports, tokenizer, threads
            proc = psutil.Process()
            before = proc.memory_full_info()
            self.attached = attach("wide", str(wide_artifact), with_tokenizer=False)  # weights only
            total = sum(float(p.sum()) for p in self.attached.model.parameters())  # touch all
            after = proc.memory_full_info()
            return {
                "uss_growth": after.uss - before.uss,
                "shared_growth": after.shared - before.shared,
                "arena_bytes": self.attached.arena_bytes,
                "checksum": total,
            }

    first, second = Replica.remote(), Replica.remote()
    a = ray_session.get(first.attach_and_run.remote())
    b = ray_session.get(second.attach_and_run.remote())
    assert a["checksum"] == b["checksum"]
    assert a["arena_bytes"] > 30e6
    # each replica's private memory grows by a small fraction of the weights: the pages are shared
    for r in (a, b):
        assert r["uss_growth"] < 0.25 * r["arena_bytes"], r
        assert r["shared_growth"] > 0.9 * r["arena_bytes"], r


def test_real_minilm_classifier_attaches_bit_identical(ray_session, tmp_path):
    """End to end on the real offline encoder (22.7M params), not just the tiny test model."""
    from transformers import AutoModelForSequenceClassification

    from loading.artifact import load_tokenizer, verify_artifact
    from tests.conftest import minilm_dir

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir()), num_labels=2, use_safetensors=True, local_files_only=True
    ).eval()
    tokenizer = load_tokenizer(minilm_dir())
    out = tmp_path / "minilm"
    info = save_artifact(model, tokenizer, out, name="minilm", method="import")
    assert verify_artifact(out) == info
    assert 22e6 < info.num_parameters < 24e6

    result = _remote_probe(ray_session, "minilm", str(out), TEXTS)
    with torch.inference_mode():
        expected = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    # Served by our own BERT module (loading.bert) in a 1-thread worker: equal to float rounding.
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=1e-5, rtol=0)


def test_reattach_in_a_process_clones_the_mapped_model(ray_session, tiny_artifact):
    @ray_session.remote(num_cpus=0)
    def attach_twice(model_dir):
        from loading.store import attach, forget_attached

        forget_attached()  # the worker may have attached in an earlier test
        first, second = attach("tiny", model_dir), attach("tiny", model_dir)
        ids = torch.tensor([[101, 7592, 2088, 102]])
        first.model.train()  # must not reach the second model
        with torch.inference_mode():
            same = torch.equal(first.model.eval()(input_ids=ids).logits, second.model(input_ids=ids).logits)
        return {
            "from": (first.loaded_from, second.loaded_from),
            "distinct": first.model is not second.model,
            "second_training": second.model.training,
            "same_ptrs": [p.data_ptr() for p in first.model.parameters()]
            == [p.data_ptr() for p in second.model.parameters()],
            "same_logits": same,
            "tokenizer": second.tokenizer is first.tokenizer,
        }

    result = ray_session.get(attach_twice.remote(str(tiny_artifact)))
    assert result["from"] == ("object-store-zero-copy", "object-store-zero-copy+process-mapping")
    assert result["distinct"] and result["same_ptrs"] and result["same_logits"] and result["tokenizer"]
    assert result["second_training"] is False


def test_disk_baseline_is_the_same_model_in_private_memory(ray_session, tiny_artifact, tmp_path):
    from loading.store import attach, import_model_code, load_from_disk

    shared, private = attach("tiny", tiny_artifact), load_from_disk(tiny_artifact)
    assert private.loaded_from == "disk" and shared.loaded_from.startswith("object-store-zero-copy")
    assert private.arena_bytes == pytest.approx(shared.arena_bytes, rel=0.05)
    assert private.info == shared.info
    for (name, a), (_, b) in zip(
        shared.model.state_dict().items(), private.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr(), f"{name} is shared, not read from disk"
    with torch.inference_mode():
        torch.testing.assert_close(
            private.model(**private.tokenizer(TEXTS)).logits, shared.model(**shared.tokenizer(TEXTS)).logits
        )
    assert import_model_code(tiny_artifact) >= 0.0
    assert import_model_code(tmp_path) == 0.0  # no config.json: nothing to import, attach will say why


def test_disk_baseline_with_fbgemm_kernel_counts_packed_weights(tiny_artifact, tmp_path):
    """A dynamic-int8 model's state holds packed (weight, bias) pairs and dtypes, not only tensors:
    the disk baseline with `int8_kernel=fbgemm` must load and count them (it once crashed)."""
    from loading.build import build_variants
    from loading.store import load_from_disk

    build_variants(tiny_artifact, ["quant"], tmp_path)
    shared = load_from_disk(tmp_path / "quant")
    packed = load_from_disk(tmp_path / "quant", int8_kernel="fbgemm")
    assert packed.loaded_from.endswith("+fbgemm-prepack") and not shared.loaded_from.endswith("prepack")
    assert 0 < packed.arena_bytes
    with torch.inference_mode():
        torch.testing.assert_close(
            packed.model(**packed.tokenizer(TEXTS)).logits,
            shared.model(**shared.tokenizer(TEXTS)).logits,
            atol=0.05,
            rtol=0.0,
        )


def test_auto_int8_kernel_is_shared_only_where_the_int8_matmul_is_fast(tiny_artifact, tmp_path, int8_matmul):
    """`auto` keeps the shared int8 weights on a CPU with a fast `_int_mm` and packs FBGEMM's private
    copy on one without (AVX2 only: shared would run fp32 matmuls there, no faster than base)."""
    from loading.build import build_variants
    from loading.store import Int8Kernel, load_from_disk

    build_variants(tiny_artifact, ["quant"], tmp_path)
    expected = Int8Kernel.SHARED if int8_matmul == "int_mm" else Int8Kernel.FBGEMM
    assert Int8Kernel.AUTO.resolve() is expected and Int8Kernel.FBGEMM.resolve() is Int8Kernel.FBGEMM
    auto = load_from_disk(tmp_path / "quant", int8_kernel="auto")
    assert auto.loaded_from.endswith("+fbgemm-prepack") is (expected is Int8Kernel.FBGEMM)
    same = load_from_disk(tmp_path / "quant", int8_kernel=expected)
    with torch.inference_mode():
        assert torch.equal(
            auto.model(**auto.tokenizer(TEXTS)).logits, same.model(**same.tokenizer(TEXTS)).logits
        )


def test_structured_variant_with_per_layer_widths_attaches_bit_identical(
    ray_session, tiny_artifact, tokenizer, tmp_path
):
    """Heads and FFN neurons cut to different widths per layer, then int8: the store serves it as built."""
    import dataclasses

    from compression import Int8DynamicQuantConfig, compress
    from compression.structured import StructuredPruner
    from loading.artifact import read_variant_info
    from loading.build import save_variant
    from loading.checkpoint import load_model

    model = load_model(tiny_artifact)
    config = model.config
    pruner = StructuredPruner(model, head_size=config.hidden_size // config.num_attention_heads)
    pruner.layers[0].head_score[0] = 1.0  # layer 0 keeps head 0; the rest tie and keep the first
    pruner.prune_to_(0.5)
    pruner.layers[1].neurons[:] = False
    pruner.layers[1].neurons[0] = True  # a different width in layer 1
    heads, widths = pruner.shrink_(model)
    assert widths[0] != widths[1]
    model.config = dataclasses.replace(config, layer_heads=heads, layer_intermediate_sizes=widths)
    out = tmp_path / "slim"
    save_variant(
        compress(model, Int8DynamicQuantConfig()),
        load_tokenizer(tiny_artifact),
        out,
        name="slim",
        parent=read_variant_info(tiny_artifact),
        parameters={},
        quantized=True,
    )
    result = _remote_probe(ray_session, "slim", str(out), TEXTS)
    with torch.inference_mode():
        expected = load_model(out)(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    assert torch.equal(torch.tensor(result["logits"]), expected)
    assert load_model(out).bert.encoder.layer[1].intermediate.dense.out_features == 1


def test_a_model_nobody_serves_is_dropped_from_the_store_with_all_its_variants(ray_session, tiny_artifact):
    import ray

    from loading.model_store import model_store

    store = model_store()
    for key in ("gone/base", "gone/quant", "kept/base"):
        ray.get(store.ensure.remote(key, str(tiny_artifact)))
    assert sorted(ray.get(store.drop_model.remote("gone"))) == ["gone/base", "gone/quant"]
    held = ray.get(store.variants.remote())
    assert "kept/base" in held and not any(k.startswith("gone/") for k in held)
    assert ray.get(store.drop_model.remote("gone")) == []  # nothing left of it
    # a later request for it reads the folder again
    assert ray.get(store.ensure.remote("gone/base", str(tiny_artifact)))["model_dir"] == str(tiny_artifact)
    for key in ("gone/base", "kept/base"):
        ray.get(store.drop.remote(key))


def test_store_command_lists_and_drops_a_model(ray_session, tiny_artifact, capsys):
    from loading.model_store import main, model_store

    ray_session.get(model_store().ensure.remote("retired/base", str(tiny_artifact)))
    assert main(["list"]) == 0 and "retired/base" in capsys.readouterr().out
    assert main(["drop", "retired"]) == 0 and "dropped retired/base" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no variant of model 'retired'"):
        main(["drop", "retired"])
