"""The variant benchmark measures a tiny model end to end (~30-60 s: every replica is a fresh actor)."""

from __future__ import annotations

import pytest

from benchmarks.variant_costs import main
from benchmarks.variant_measure import VariantBenchConfig, kernel_options, measure_model, served_kernels
from deployments.serve_config import load_serve_config
from loading.store import Int8Kernel

VARIANTS = ("base", "quant", "pruned-50")


@pytest.fixture(scope="module")
def tiny_result(ray_session, tiny_artifact, tmp_path_factory) -> dict:
    cfg = VariantBenchConfig(
        models=("default",),
        variants=VARIANTS,
        memory_variants=("quant",),
        threads=(1,),
        replicas=2,
        batch_size=4,
        seq_len=32,
        repeats=1,
        served_kernels_only=True,
    )
    return measure_model(tiny_artifact, tmp_path_factory.mktemp("variant-bench") / "tiny", cfg, tag="tiny")


def test_every_variant_is_sized_stored_and_timed(tiny_result):
    rows = tiny_result["variants"]
    assert list(rows) == list(VARIANTS)
    for variant, row in rows.items():
        assert row["store_arena_bytes"] >= row["store_tensor_bytes"] > 0, variant
        labels = {"default"} if variant == "base" else set(row["latency"])
        assert len(labels) == len(kernel_options(variant)), (variant, row["latency"])
        for stats in row["latency"].values():
            assert stats["1"]["median_ms"] > 0 and len(stats["1"]["runs_ms"]) == 1, (variant, stats)
    assert rows["quant"]["weights_bytes"] < rows["base"]["weights_bytes"]
    assert rows["pruned-50"]["weights_bytes"] < rows["base"]["weights_bytes"]
    assert rows["base"]["weights_vs_base"] == 1.0


def test_replica_memory_is_reported_per_replica(tiny_result):
    memory = tiny_result["variants"]["quant"]["memory"]
    served = served_kernels()["quant"]["int8_kernel"]
    assert set(memory) == {f"int8={served}"}  # serve_config.yaml's kernels only
    run = memory[f"int8={served}"]
    assert run["served"] and run["shared"] == (served == "shared")
    assert len(run["replicas"]) == 2
    assert len({r["pid"] for r in run["replicas"]}) == 2, "each replica is its own process"
    assert all(("fbgemm-prepack" in r["loaded_from"]) == (served == "fbgemm") for r in run["replicas"])
    assert run["added_max_uss_bytes"] == run["replicas"][1]["uss_growth_bytes"]
    assert run["added_vs_weights"] == pytest.approx(
        run["added_max_uss_bytes"] / tiny_result["variants"]["quant"]["weights_bytes"], abs=1e-4
    )


def test_targets_are_booleans(tiny_result):
    targets = tiny_result["targets"]
    assert "quant_le_42pct_of_base" in targets and "no_variant_slower_than_base" in targets
    assert all(isinstance(v, bool) for v in targets.values()), targets


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variants": ("quant",)}, "must include base"),
        ({"variants": ("base", "pruned-x")}, "unknown variant"),
        ({"memory_variants": ("pruned-75",), "variants": ("base",)}, "memory_variants must be"),
        ({"threads": ()}, "threads must be"),
        ({"replicas": 0}, "replicas must be"),
        ({"models": ("gpt",)}, "models must be"),
    ],
)
def test_config_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VariantBenchConfig(**kwargs)


def test_served_kernels_come_from_the_serve_config(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(
        "applications:\n"
        "  - name: a\n    args: {variant: quant, int8_kernel: fbgemm}\n"
        "  - name: b\n    args: {variant: pruned-75}\n"
    )
    auto = Int8Kernel.AUTO.resolve().value  # the deployment's default, decided for this CPU
    assert served_kernels(load_serve_config(config)) == {
        "quant": {"int8_kernel": "fbgemm", "sparse_kernel": "shared"},  # a default fills the gap
        "pruned-75": {"int8_kernel": auto, "sparse_kernel": "shared"},
    }
    config.write_text("applications:\n  - name: c\n    args: {variant: base, sparse_kernel: nope}\n")
    with pytest.raises(ValueError, match="sparse_kernel"):  # as the deployment would reject it
        served_kernels(load_serve_config(config))


def test_cli_rejects_bad_models():
    with pytest.raises(SystemExit):
        main(["--models", "gpt"])
