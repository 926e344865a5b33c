"""The int8 choices script and the int8 kernel timings, quick: a tiny model, a few rows, tiny shapes."""

from __future__ import annotations

from benchmarks.int8_kernels import AVX2_ENV, EXTRA_KERNELS
from tests.benchmarks import run_record


def test_quant_choices_quick_compares_every_kernel_with_base():
    record = run_record("benchmarks.quant_choices", "--quick")
    assert record["rows"] == 24 and record["model"] == "tiny-random"
    assert record["base"]["agreement"] == 1.0 and record["base"]["vs_base_batch_ms"] == 1.0
    assert set(record["choices"]) == {"per-channel (before)", "default (now)"}
    for choice in record["choices"].values():
        assert set(choice["kernels"]) == {"int_mm", "dequant", "fbgemm"}
        for row in choice["kernels"].values():
            assert 0.0 <= row["agreement"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
            assert row["batch_ms"] > 0 and row["texts_per_s"] > 0 and row["prob_mae"] >= 0
    assert record["choices"]["per-channel (before)"]["config"]["fp32_layers"] == []
    assert isinstance(record["int8_matmul_is_fast"], bool) and record["machine"]["cpu"]


def test_int8_kernels_emulates_avx2_in_a_fresh_process():
    shape = "minilm-attn 384->384"
    record = run_record(
        "benchmarks.int8_kernels",
        "--isa",
        "avx2",
        "--extra",
        "--tokens",
        "8",
        "--repeats",
        "1",
        "--shapes",
        shape,
    )
    assert record["env"] == AVX2_ENV and record["machine"]["cpu_capability"] == "AVX2"
    row = record["shapes"][shape]
    assert row["tokens"] == 8 and set(EXTRA_KERNELS) <= set(row["ms"])
    assert row["vs_fbgemm"]["fbgemm"] == 1.0 and all(ms > 0 for ms in row["ms"].values())
