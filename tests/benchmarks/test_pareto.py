"""Accuracy vs cost per million requests: the front on given points, and the script on small records."""

from __future__ import annotations

import json
from dataclasses import astuple

import pytest
import torch
from matplotlib.image import imread

from benchmarks.cost_model import (
    DEFAULT_INSTANCES,
    FleetAssumptions,
    VariantMeasurement,
    load_measurements,
    plan,
)
from benchmarks.pareto import DEFAULT_MEASUREMENTS, accuracies, main, pareto_front, served_rates
from tests.benchmarks import run_record


def test_the_front_drops_every_dominated_point():
    points = {
        "cheap": (0.5, 0.60),
        "a": (1.0, 0.80),
        "b": (2.0, 0.85),
        "b-twin": (2.0, 0.85),  # identical to b: neither dominates the other
        "worse-same-cost": (2.0, 0.70),
        "same-acc-dearer": (3.0, 0.85),
        "dearer-worse": (3.5, 0.75),
        "best": (4.0, 0.90),
    }
    assert pareto_front(points) == ["cheap", "a", "b", "b-twin", "best"]
    assert pareto_front({}) == []
    assert pareto_front({"only": (1.0, 0.5)}) == ["only"]


def _metrics(accuracy: float, rows: int) -> dict:
    return {"accuracy": accuracy, "accuracy_ci95": [accuracy - 0.03, accuracy + 0.03], "rows": rows}


SWEEP = {
    "phases": {
        "coarse": {"variants": {"base": _metrics(0.70, 12), "pruned-60": _metrics(0.50, 12)}},
        "fine": {
            "variants": {
                "base": _metrics(0.76, 30),
                "quant": _metrics(0.77, 30),
                "pruned-60": _metrics(0.75, 30),
            }
        },
        "recovery": {
            "variants": {"base": _metrics(0.76, 30), "pruned-kd-structured-quant-50": _metrics(0.74, 30)}
        },
    }
}


def _throughput(rates: dict[str, float]) -> dict:
    served = lambda rps: [{"users": 8, "requests_per_s": rps / 2}, {"users": 32, "requests_per_s": rps}]  # noqa: E731
    return {"fixed_users": 32, "variants": {name: {"served": served(rps)} for name, rps in rates.items()}}


def test_accuracy_comes_from_the_phase_on_most_rows_and_rates_at_the_fixed_users():
    scores = accuracies(SWEEP)
    assert scores["pruned-60"] == {**_metrics(0.75, 30), "phase": "fine"}
    assert scores["base"]["phase"] == "recovery"  # a tie on rows: the later phase
    assert served_rates([_throughput({"base": 20.0}), _throughput({"base": 24.0, "quant": 40.0})]) == {
        "base": 24.0,
        "quant": 40.0,
    }
    with pytest.raises(ValueError, match="'variants' object"):
        served_rates([{"fixed_users": 32}])


def test_script_prices_measured_variants_and_lists_the_rest(tmp_path):
    sweep, throughput = tmp_path / "sweep.json", tmp_path / "throughput.json"
    sweep.write_text(json.dumps(SWEEP))
    rates = {"base": 24.0, "quant": 40.0, "pruned-kd-structured-quant-50": 100.0, "not-in-sweep": 50.0}
    throughput.write_text(json.dumps(_throughput(rates)))
    png = tmp_path / "pareto.png"
    record = run_record(
        "benchmarks.pareto", "--sweep", str(sweep), "--throughput", str(throughput), "--plot", str(png)
    )
    by_name = {p["variant"]: p for p in record["points"]}
    assert set(by_name) == {"base", "quant", "pruned-kd-structured-quant-50"}
    assert record["unmeasured"] == ["pruned-60"]  # no req/s: listed, not guessed
    # quant is dearer and more accurate than the structured variant, base dearer and less accurate than quant
    assert record["front"] == ["pruned-kd-structured-quant-50", "quant"]
    base = by_name["base"]
    m = {m.variant: m for m in load_measurements(DEFAULT_MEASUREMENTS)[1]}["base"]
    at_24 = VariantMeasurement("base", 24.0, *astuple(m)[2:])  # the recorded replica, at this req/s
    expected = plan(at_24, DEFAULT_INSTANCES["m5.large"], FleetAssumptions()).on_demand
    assert base["usd_per_million"] == pytest.approx(expected.usd_per_million_at_full_use)
    assert base["memory_from"] == "base" and base["rate_source"] == "served"
    assert by_name["pruned-kd-structured-quant-50"]["memory_from"] == "base"  # not measured: base's memory
    assert imread(png)[..., :3].std() > 0.05


def test_measure_times_the_cached_variants_here(tmp_path, tiny_artifact, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "base").symlink_to(tiny_artifact, target_is_directory=True)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(
        json.dumps(
            {"phases": {"fine": {"variants": {"base": _metrics(0.6, 30), "quant": _metrics(0.6, 30)}}}}
        )
    )
    threads = torch.get_num_threads()
    try:
        argv = ["--sweep", str(sweep), "--measure", "--cache", str(cache), "--plain-texts", "8"]
        assert main([*argv, "--plot", str(tmp_path / "p.png"), "--json"]) == 0
    finally:
        torch.set_num_threads(threads)  # plain_rate times at one thread
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["variant"] for p in record["points"]] == ["base"] and record["rate_source"] == "plain"
    assert record["unmeasured"] == ["quant"]  # not in the cache


def test_one_source_of_rates_is_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--sweep", str(tmp_path / "absent.json")])
    assert exit_.value.code == 2 and "exactly one source of req/s" in capsys.readouterr().err
