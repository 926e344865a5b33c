"""Fault scripts: corrupt artifacts are refused (verify, build, --if-missing rebuild), the request
records' arithmetic, and (slow) the whole `python -m benchmarks.faults --quick` run."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.corrupt_artifacts import CORRUPTIONS, build_refusal, corrupt_artifact
from benchmarks.faults import FaultsConfig
from benchmarks.records import RecordTail, summarize
from loading.artifact import WEIGHTS_FILE, ArtifactError, verify_artifact
from loading.build import build_variants
from tests.benchmarks import run_record


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_is_refused_by_verify_and_the_source_stays_intact(tiny_artifact, tmp_path, kind):
    damaged = corrupt_artifact(tiny_artifact, tmp_path / kind, kind)
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match variant\.json: hash"):
        verify_artifact(damaged)
    assert verify_artifact(tiny_artifact).name == "tiny"  # only the copy was damaged
    size = (damaged / WEIGHTS_FILE).stat().st_size
    original = (tiny_artifact / WEIGHTS_FILE).stat().st_size
    assert size == (original // 2 if kind == "truncated" else original)


def test_flipped_bytes_still_parse_so_only_the_hash_catches_them(tiny_artifact, tmp_path):
    from safetensors.torch import load_file

    damaged = corrupt_artifact(tiny_artifact, tmp_path / "flipped", "flipped")
    good, bad = load_file(tiny_artifact / WEIGHTS_FILE), load_file(damaged / WEIGHTS_FILE)
    changed = [k for k in good if not good[k].equal(bad[k])]
    assert len(changed) == 1  # 16 bytes inside one tensor; a loader without the hash would serve it


def test_an_unknown_corruption_is_refused(tiny_artifact, tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        corrupt_artifact(tiny_artifact, tmp_path / "x", "melted")
    assert not (tmp_path / "x").exists()


def test_build_from_a_damaged_base_exits_2_with_one_line_and_writes_nothing(tiny_artifact, tmp_path):
    damaged = corrupt_artifact(tiny_artifact, tmp_path / "base", "truncated")
    refusal = build_refusal(damaged, tmp_path / "out")
    assert refusal["exit_code"] == 2 and not refusal["traceback"] and not refusal["wrote_variant"]
    assert refusal["message"].startswith("python -m loading.build: error: ")
    assert "does not match variant.json" in refusal["message"] and str(damaged) in refusal["message"]


def test_if_missing_rebuilds_a_damaged_variant_instead_of_keeping_it(tiny_artifact, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(tiny_artifact, root / "base")
    (built,) = build_variants(root / "base", ["quant"], root)
    weights = root / "quant" / WEIGHTS_FILE
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    (rebuilt,) = build_variants(root / "base", ["quant"], root, if_missing=True)
    assert verify_artifact(root / "quant").content_hash == rebuilt.content_hash == built.content_hash


def _record(t0, t1, first_error=None, error=None, attempts=1):
    return {"t0": t0, "t1": t1, "attempts": attempts, "first_error": first_error, "error": error}


def test_summarize_counts_first_attempt_and_user_visible_failures_by_end_time():
    records = [
        _record(0.0, 0.1),
        _record(0.5, 1.2, first_error="HTTP 500: replica died", attempts=2),  # retried, then fine
        _record(0.9, 1.5, first_error="no answer: reset", error="no answer: reset", attempts=4),
        _record(1.9, 2.5),  # ends after the window
    ]
    s = summarize(records, 0.0, 2.0)
    counts = (s["requests"], s["failed_first_attempt"], s["failed"], s["retried"], s["max_attempts"])
    assert counts == (3, 2, 1, 2, 4)
    assert s["first_attempt_errors"] == ["HTTP 500", "no answer"]
    assert s["p50_ms"] == pytest.approx(600.0) and s["max_ms"] == pytest.approx(700.0)
    assert summarize(records, 5.0, 6.0)["requests"] == 0


def test_record_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    tail = RecordTail(path)
    assert tail.read() == []
    path.write_text(json.dumps({"a": 1}) + "\n" + '{"a": 2')  # a line still being written
    assert tail.read() == [{"a": 1}]
    with path.open("a") as f:
        f.write("}\n" + json.dumps({"a": 3}) + "\n")
    assert [r["a"] for r in tail.read()] == [1, 2, 3]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="users, retry_attempts must be >= 1"):
        FaultsConfig(users=0)
    with pytest.raises(ValueError, match="corruptions must be among"):
        FaultsConfig(corruptions=("melted",))


@pytest.mark.slow
def test_faults_quick_meets_every_target():
    out = run_record("benchmarks.faults", "--quick", "--port", "8300", timeout=900)
    assert all(out["targets"].values()), out["targets"]
    kill = out["replica_kill"]
    assert kill["before"]["requests"] > 0 and kill["new_replica_serving_s"] > 0
    steps = out["store_kill"]["steps"]
    for step in ("scale_to_3", "killed_for_good_scale_to_4"):
        assert steps[step]["weights_loaded_from"].startswith("object-store-zero-copy")
    assert "does not match variant.json" in out["artifacts"]["deploy"]["truncated"]["error"]
