"""Soak script: user choice, memory trend, per-minute series, verdicts, and (slow) the --quick run."""

from __future__ import annotations

import random

import pytest

from benchmarks.soak import choose_users, idle_change, memory_trend, minute_series, verdicts
from tests.benchmarks import run_record


def _probe(users, p50, p99, failures=0):
    return {"users": users, "p50_ms": p50, "p99_ms": p99, "failures": failures}


def test_choose_users_takes_the_largest_count_without_a_queue():
    probes = [_probe(4, 100, 150), _probe(8, 150, 260), _probe(16, 200, 450), _probe(32, 400, 700, 1)]
    assert choose_users(probes) == 8  # 16 queues (p99 > 2x p50), 32 failed
    # none fits: the steadiest (a short probe's p99 is one hiccup on a shared machine)
    assert choose_users([_probe(2, 100, 400), _probe(4, 150, 360), _probe(8, 200, 700)]) == 4
    with pytest.raises(ValueError, match="without failures"):
        choose_users([_probe(4, 100, 150, 3)])


def _series(slope_per_min, noise_mib=0.0, minutes=10, every_s=10, start=300.0, seed=0):
    rng = random.Random(seed)
    return [
        (t, start + slope_per_min * t / 60 + rng.uniform(-noise_mib, noise_mib))
        for t in range(0, minutes * 60 + 1, every_s)
    ]


def test_a_flat_noisy_series_is_not_growth():
    trend = memory_trend(_series(0.0, noise_mib=3.0), warmup_s=60)
    assert not trend["growing"]
    assert abs(trend["slope_mib_per_min"]) < 0.3 and trend["samples"] == 55


def test_a_steady_leak_is_growth_and_its_slope_is_recovered():
    trend = memory_trend(_series(2.0, noise_mib=1.0), warmup_s=60)  # +18 MiB over the 9 fitted minutes
    assert trend["growing"]
    assert trend["slope_mib_per_min"] == pytest.approx(2.0, abs=0.1)
    assert trend["growth_mib"] == pytest.approx(18.0, abs=1.0)


def test_warmup_growth_is_left_out_of_the_fit():
    warm = [(t, 250.0 + t) for t in range(0, 60, 10)] + _series(0.0, noise_mib=0.5)[6:]
    assert not memory_trend(warm, warmup_s=60)["growing"]
    assert memory_trend(warm, warmup_s=0)["slope_mib_per_min"] > 1.0


def test_too_few_samples_cannot_make_a_trend():
    with pytest.raises(ValueError, match="must number >= 3"):
        memory_trend([(0, 1.0), (70, 1.0), (80, 1.0)], warmup_s=60)


def _row(ts, total, failures, p50="100", p99="200", name="Aggregated"):
    return {
        "Timestamp": str(ts),
        "Name": name,
        "Total Request Count": str(total),
        "Total Failure Count": str(failures),
        "50%": p50,
        "99%": p99,
    }


def test_minute_series_splits_cumulative_counts_by_minute():
    rows = [
        _row(1000, 10, 0, p50="N/A", p99="N/A"),
        _row(1030, 300, 0, p50="90", p99="180"),
        _row(1059, 590, 0, p50="110", p99="220"),
        _row(1059, 590, 0, name="/base/classify [single]"),
        _row(1061, 600, 1, p50="120", p99="900"),
        _row(1119, 1200, 1, p50="100", p99="300"),
    ]
    assert minute_series(rows) == [
        {"minute": 0, "requests": 590, "failures": 0, "p50_ms": 100.0, "p99_ms": 200.0},
        {"minute": 1, "requests": 610, "failures": 1, "p50_ms": 110.0, "p99_ms": 600.0},
    ]
    assert minute_series([]) == []


def test_idle_change_allows_jitter_but_not_kept_memory():
    assert not idle_change(400.0, 406.0)["growing"]  # within 2% of 400
    kept = idle_change(400.0, 420.0)
    assert kept["growing"] and kept["growth_mib"] == 20.0
    assert idle_change(400.0, None)["growing"]  # a replica gone: not a pass


def test_verdicts_need_every_target():
    stats = {"requests": 100, "failures": 0, "p50_ms": 100.0, "p99_ms": 290.0}
    flat = {"replica:a": {"uss": {"growing": False}, "idle": {"growing": False}}}
    assert all(verdicts(stats, flat, True, 10).values())
    assert verdicts(stats, flat, True, 1)["no_replica_growth_under_load"] is None  # too short to judge
    assert not verdicts({**stats, "p99_ms": 310.0}, flat, True, 10)["p99_within_3x_p50"]
    assert not verdicts({**stats, "failures": 1}, flat, True, 10)["zero_failures"]
    leaking = {**flat, "replica:b": {"uss": {"growing": True}, "idle": {"growing": True}}}
    assert not verdicts(stats, leaking, True, 10)["no_replica_growth_under_load"]
    assert not verdicts(stats, leaking, True, 1)["no_replica_leak_idle"]
    assert not verdicts(stats, flat, False, 10)["replicas_unchanged"]


@pytest.mark.slow
def test_soak_quick_runs_a_minute_and_reports_memory_of_each_replica():
    out = run_record("benchmarks.soak", "--quick", "--port", "8301", timeout=600)
    assert out["locust"]["requests"] > 0 and out["targets"]["zero_failures"]
    assert out["targets"]["no_replica_growth_under_load"] is None  # a minute is too short to judge
    replicas = [k for k in out["memory"] if k.startswith("replica:")]
    assert len(replicas) == 2 and out["replicas_before"] == out["replicas_after"]
    assert all(out["memory"][k]["uss"]["samples"] >= 3 for k in replicas)
    assert out["per_minute"] and out["per_minute"][0]["requests"] > 0
