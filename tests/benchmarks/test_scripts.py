"""Cold-start and throughput scripts: their arithmetic, config editing, and (slow) quick runs."""

from __future__ import annotations

import pytest

from benchmarks.autoscale import StepLoad, summarize
from benchmarks.coldstart import PHASES, breakdown
from benchmarks.harness import ROOT
from benchmarks.harness.session import app_entry
from deployments.serve_config import ServeConfigError, load_serve_config
from tests.benchmarks import run_record


def test_breakdown_phases_add_up_to_the_total():
    startup = {
        "process_started": 100.5,
        "init_started": 102.9,
        "weights_started": 103.0,
        "weights_done": 103.02,
        "ready": 103.05,
        "first_inference_ms": 40.0,
    }
    b = breakdown(asked=100.0, first_200=103.2, startup=startup)
    assert sum(b[name] for name, _, _ in PHASES) == pytest.approx(b["total_s"]) == pytest.approx(3.2)
    assert b["weights_s"] == pytest.approx(0.02) and b["weights_share"] == pytest.approx(0.02 / 3.2)
    assert b["boot_and_imports_s"] == pytest.approx(2.4) and b["first_inference_s"] == pytest.approx(0.04)


def test_app_entry_fixes_replicas_and_overrides_args_on_a_copy():
    config = load_serve_config(ROOT / "serve_config.yaml")
    app = app_entry(config, "quant", replicas=2, weights="disk")
    deployment = app["deployments"][0]
    assert deployment["num_replicas"] == 2 and "autoscaling_config" not in deployment
    assert app["args"] == {**app_entry(config, "quant")["args"], "weights": "disk"}
    assert "autoscaling_config" in app_entry(config, "quant")["deployments"][0]  # the config is intact
    with pytest.raises(ServeConfigError, match="variant 'nope' is not in"):
        app_entry(config, "nope")


def test_step_load_summary_times_each_scaling_event_from_the_step():
    record = StepLoad(step_at=100.0, stop_at=130.0, min_again_at=162.5)
    # running / target replicas: the autoscaler decides at 104, the replica runs at 109, back down at 162
    record.samples = [(99.0, 1, 1), (104.0, 1, 2), (109.0, 2, 2), (150.0, 2, 2), (162.5, 1, 1)]
    record.requests = [(98.0, "a", 200), (101.0, "a", 200), (110.5, "b", 200), (111.0, "b", 503)]
    out = summarize(record, {"a"}, {"min_replicas": 1, "max_replicas": 2}, (2, 32))
    assert out["step_to_decision_s"] == 4.0
    assert out["new_replicas_first_200_s"] == [10.5] and out["step_to_full_capacity_s"] == 10.5
    assert out["load_stop_to_min_replicas_s"] == 32.5 and out["peak_replicas"] == 2
    assert (out["requests"], out["failed"]) == (4, 1)
    assert out["_requests"][0] == (-2.0, "a", 200)


def test_a_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(ServeConfigError, match="cannot read the Serve config"):
        load_serve_config(tmp_path / "absent.yaml")


def _run_quick(module: str) -> dict:
    return run_record(module, "--quick", "--port", "8012")


@pytest.mark.slow
def test_coldstart_quick_measures_a_zero_copy_and_a_disk_replica():
    out = _run_quick("benchmarks.coldstart")
    assert out["application"]["base"]["first_200_s"] > 0
    store, disk = out["replica"]["base/store"]["median"], out["replica"]["base/disk"]["median"]
    for b in (store, disk):
        assert sum(b[name] for name, _, _ in PHASES) == pytest.approx(b["total_s"])
    assert store["weights_s"] < disk["weights_s"]


@pytest.mark.slow
def test_throughput_quick_compares_served_plain_and_pipeline():
    out = _run_quick("benchmarks.throughput")
    base = out["variants"]["base"]
    (served,) = base["served"]
    assert served["failures"] == 0 and served["requests"] > 0
    assert base["plain_texts_per_s"] > 0 and out["hf_pipeline_texts_per_s"] > 0
    assert 0.1 < base["served_over_plain"] < 2


def test_padding_bench_times_every_setting(tiny_artifact):
    from benchmarks.harness.load import random_texts
    from benchmarks.throughput import texts_per_s
    from loading.artifact import load_tokenizer
    from loading.checkpoint import load_model
    from loading.predict import Predictor

    texts = random_texts(12, seed=1)
    assert len(texts) == 12 and texts == random_texts(12, seed=1)
    predictor = Predictor(load_model(tiny_artifact), load_tokenizer(tiny_artifact))
    assert texts_per_s(predictor, texts, 4) > 0 and texts_per_s(predictor, texts, 4, trim=True) > 0


def test_model_memory_reads_the_uss_after_each_stretch_and_fits_its_trend(tiny_artifact):
    from benchmarks.model_memory import model_memory

    out = model_memory(tiny_artifact, batches=40, every=10, warmup=10)
    series = out["series_anonymous_uss_mib"]
    assert [n for n, _, _ in series] == [0, 10, 20, 30, 40]
    assert all(10 < anon < 4000 and 10 < uss < 4000 for _, anon, uss in series)  # a real process, MiB
    assert out["anonymous"]["samples"] == 4 and out["anonymous"]["end_mib"] == series[-1][1]


@pytest.mark.slow
def test_autoscale_quick_adds_a_replica_under_a_step_load():
    out = _run_quick("benchmarks.autoscale")
    assert out["failed"] == 0 and out["peak_replicas"] == out["autoscaling_config"]["max_replicas"]
    assert 0 < out["step_to_decision_s"] < out["step_to_full_capacity_s"]
