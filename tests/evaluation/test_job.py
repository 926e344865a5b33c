"""The sharded evaluation job: a lost worker is replaced, a killed job resumes, results equal a clean run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from evaluation.data import DataError, DataSpec
from evaluation.job import JobConfig, run_job
from evaluation.shards import read_predictions
from evaluation.worker_pool import ShardDone, WorkerLostError
from loading.artifact import ArtifactError
from loading.build import build_variants

WORDS = "the cat sat on a warm mat while rain fell over quiet hills and distant towns".split()
ROWS = 45
SHARD_ROWS = 5  # 9 shards per variant


@pytest.fixture(scope="module")
def artifacts(tiny_artifact, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-artifacts")
    shutil.copytree(tiny_artifact, root / "base")
    build_variants(tiny_artifact, ["quant"], root)
    return root


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 11)) for i in range(ROWS)]
    path = tmp_path_factory.mktemp("eval-data") / "set.csv"
    pd.DataFrame({"text": texts, "label": [f"label_{i % 2}" for i in range(ROWS)]}).to_csv(path, index=False)
    return path


def _cfg(artifacts: Path, out: Path, **kw) -> JobConfig:
    kw.setdefault("workers", 2)
    return JobConfig(
        variants=("quant",),
        out=str(out),
        model_root=str(artifacts),
        shard_rows=SHARD_ROWS,
        batch_size=4,
        bootstrap_resamples=200,
        report=False,
        **kw,
    )


@pytest.fixture(scope="module")
def clean(ray_session, artifacts, data_csv, tmp_path_factory) -> tuple[dict, Path]:
    """One worker, nothing killed: the reference."""
    out = tmp_path_factory.mktemp("clean")
    return run_job(DataSpec(str(data_csv)), _cfg(artifacts, out, workers=1)), out


def test_clean_run_writes_every_shard_and_metric(clean):
    results, out = clean
    assert list(results["variants"]) == ["base", "quant"]  # base comes first, added by the job
    base, quant = results["variants"]["base"], results["variants"]["quant"]
    assert sum(map(sum, base["confusion_counts"])) == ROWS and base["rows"] == ROWS
    assert base["accuracy_ci95"][0] <= base["accuracy"] <= base["accuracy_ci95"][1]
    assert 0.0 <= base["auc"] <= 1.0 and "label_1" in base["roc"]
    assert "agreement_with_base" not in base and 0.0 <= quant["agreement_with_base"] <= 1.0
    assert quant["size_bytes"] < base["size_bytes"] and quant["size_vs_base"] == pytest.approx(
        quant["size_bytes"] / base["size_bytes"]
    )
    frame = read_predictions(out / "predictions" / "quant")
    assert frame["index"].tolist() == list(range(ROWS)) and frame["row"].tolist() == list(range(1, ROWS + 1))
    assert (frame[["prob_label_0", "prob_label_1"]].sum(axis=1) - 1).abs().max() < 1e-5
    assert len(list((out / "predictions" / "base").glob("shard-*.parquet"))) == 9
    assert not list(out.rglob("*.tmp"))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["variants"]["quant"]["accuracy"] == quant["accuracy"]
    assert results["job"]["timings"]["base"]["rows"] == ROWS


def _wait_until_no_new_shards(folder: Path, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
    """Until no shard file has appeared in `folder` for `quiet_s`: the stopped job's other workers may
    still be writing the shards they held when it stopped."""
    deadline = time.monotonic() + timeout_s
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(list(folder.rglob("shard-*.parquet")))
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"shards still appearing in {folder} after {timeout_s} s")


def test_lost_workers_are_replaced_then_a_killed_job_resumes_to_the_clean_result(
    ray_session, artifacts, data_csv, clean, tmp_path
):
    reference, clean_out = clean
    kills: list[ShardDone] = []
    finished: list[ShardDone] = []

    def kill_a_worker(done: ShardDone) -> None:
        # After the driver's 2nd and 12th finished shard, kill the worker that just finished it: it dies
        # holding the next shard, as on a spot reclaim. The first loss is replaced; the second is one
        # too many. (Counted by the driver's calls, not by shard files: two workers can write theirs
        # before the driver hears of either.)
        finished.append(done)
        if len(finished) in (2, 12):
            kills.append(done)
            ray.kill(done.worker)

    cfg = _cfg(artifacts, tmp_path, max_worker_losses=1)
    with pytest.raises(WorkerLostError, match="re-run the same command to resume"):
        run_job(DataSpec(str(data_csv)), cfg, on_shard=kill_a_worker)
    assert len(kills) == 2
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("shard-*.parquet")}
    assert 12 <= len(written) < 18  # the first loss cost nothing; the job stopped at the second
    # What a crash can leave besides whole shards: a damaged shard file and a half-written temp file.
    damaged = sorted(written)[0]
    damaged.write_bytes(b"not parquet")
    del written[damaged]
    (damaged.parent / f".{damaged.name}.abc.tmp").write_bytes(b"half")

    _wait_until_no_new_shards(tmp_path)  # else one landing during the resume's own scan is counted twice
    resume_started = time.time_ns()
    resumed = run_job(DataSpec(str(data_csv)), cfg)
    # Shards from before the resume are kept, whatever is left is predicted. (A shard a dying worker
    # was finishing can still land just after the job stopped, so count them now, not at the stop.)
    kept = [q for q in tmp_path.rglob("shard-*.parquet") if q.stat().st_mtime_ns < resume_started]
    assert len(kept) >= len(written)
    assert sum(t["shards"] for t in resumed["job"]["timings"].values()) == 18 - len(kept)
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())  # finished shards were kept
    assert resumed["variants"] == reference["variants"]  # exactly, not within a tolerance
    for variant in ("base", "quant"):
        pd.testing.assert_frame_equal(
            read_predictions(tmp_path / "predictions" / variant),
            read_predictions(clean_out / "predictions" / variant),
        )


def test_a_different_job_in_the_same_folder_is_refused(ray_session, artifacts, data_csv, clean, tmp_path):
    _, out = clean
    other = tmp_path / "other.csv"
    pd.read_csv(data_csv).head(20).to_csv(other, index=False)
    with pytest.raises(ValueError, match=r"must hold predictions of this same job.*\['data', 'rows'\]"):
        run_job(DataSpec(str(other)), _cfg(artifacts, out, workers=1))
    with pytest.raises(ValueError, match=r"differs in \['batch_size'\]"):
        run_job(DataSpec(str(data_csv)), JobConfig(**{**_cfg(artifacts, out).__dict__, "batch_size": 8}))


def test_labels_the_model_does_not_know_are_refused_before_any_work(artifacts, tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["label_0", "spam", "spam"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"bad.csv: labels \['spam'\] in 2 rows \(2, 3\).*variant 'base'"):
        run_job(DataSpec(str(path)), _cfg(artifacts, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_missing_variant_names_the_build_command(artifacts, data_csv, tmp_path):
    cfg = JobConfig(variants=("pruned-60",), model_root=str(artifacts), out=str(tmp_path))
    with pytest.raises(ArtifactError, match=r"variant 'pruned-60'.*make artifacts"):
        run_job(DataSpec(str(data_csv)), cfg)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        JobConfig(workers=0)
    with pytest.raises(ValueError, match="'fast' is not a valid Int8Kernel"):
        JobConfig(int8_kernel="fast")


@pytest.mark.slow
def test_real_model_job_on_a_sample(ray_session, tmp_path):
    """The fine-tuned default model and its int8 variant (`make artifacts`) on 64 Dreaddit test rows."""
    cfg = JobConfig(variants=("quant",), out=str(tmp_path), bootstrap_resamples=200, report=False)
    results = run_job(DataSpec(sample=64, seed=0), cfg)
    base, quant = results["variants"]["base"], results["variants"]["quant"]
    assert base["accuracy"] > 0.6 and base["auc"] > 0.7  # majority class: 0.5 on a balanced sample
    assert quant["agreement_with_base"] > 0.9 and abs(quant["accuracy"] - base["accuracy"]) < 0.1
