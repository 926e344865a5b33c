"""The loading benchmark runs end to end and reports every method (quick mode, ~40-50 s)."""

from __future__ import annotations

import pytest

from benchmarks.load_speed import METHODS, BenchConfig, main
from tests.benchmarks import run_record


@pytest.fixture(scope="module")
def quick_result() -> dict:
    """`python -m benchmarks.load_speed --quick --json` in its own process, with its own Ray instance.

    A subprocess, not `main()` in-process: the benchmark starts and shuts down a Ray instance and
    kills the model store, which must not touch the test session's `ray_session`.
    """
    return run_record("benchmarks.load_speed", "--quick", timeout=240)


def test_quick_run_reports_every_method(quick_result):
    runs = quick_result["models"]["default"]["runs"]["3"]
    assert set(runs) == set(METHODS)
    for method, stats in runs.items():
        assert stats["median_ms"] > 0 and stats["first_ms"] > 0, (method, stats)
        assert stats["total_s"] >= stats["median_ms"] / 1e3, (method, stats)
    assert quick_result["ray_init_s"] > 0
    assert quick_result["store_put_s"]["default"] > 0
    assert quick_result["machine"]["cores"] >= 1
    # quick mode runs no bert-base, so the bert-base targets are not judged
    assert set(quick_result["targets"].values()) == {None}


def test_ratios_cover_both_zero_copy_paths(quick_result):
    ratios = quick_result["ratios"]["default"]
    pooled = quick_result["models"]["default"]["pooled"]
    fp = pooled["from_pretrained"]["median_ms"]
    assert ratios["from_pretrained_over_zerocopy"] == round(fp / pooled["zerocopy"]["median_ms"], 2)
    assert ratios["from_pretrained_over_zerocopy_remap"] == round(
        fp / pooled["zerocopy_remap"]["median_ms"], 2
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loads": (1,)}, "loads must be"),
        ({"loads": ()}, "loads must be"),
        ({"models": ("gpt",)}, "models must be"),
        ({"models": ("default", "default")}, "models must be"),
    ],
)
def test_config_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**kwargs)


@pytest.mark.parametrize(
    "argv",
    [["--worker", "torch_load", "--loads", "3"], ["--loads", "1"], ["--loads", "x"], ["--models", "gpt"]],
)
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        main(argv)
