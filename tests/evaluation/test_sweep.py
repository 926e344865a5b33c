"""The pruning sweep: the study's amounts, variants built once into a cache, one report over both phases."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.image import imread

from evaluation.data import DataSpec
from evaluation.job import JobConfig
from evaluation.sweep import SweepConfig, coarse_amounts, run_sweep, sweep_variants

WORDS = "a long quiet day by the sea with gulls and wind over warm sand".split()


def test_coarse_amounts_are_the_studys_20_linear_steps():
    amounts = coarse_amounts()
    assert len(amounts) == 20 and amounts[0] == 10 and amounts[-1] == 99
    assert amounts[:4] == [10, 15, 19, 24]  # 10 + k * 89 / 19, rounded


def test_variant_names_follow_the_builders_grammar():
    points = sweep_variants(("l1", "structured"), (50, 75))
    assert list(points) == [
        "pruned-50",
        "pruned-75",
        "pruned-quant-50",
        "pruned-quant-75",
        "pruned-structured-50",
        "pruned-structured-75",
        "pruned-structured-quant-50",
        "pruned-structured-quant-75",
    ]
    assert points["pruned-structured-quant-75"] == {"method": "structured", "quant": True, "amount_pct": 75}
    with pytest.raises(ValueError, match="methods must be some of"):
        SweepConfig(methods=("magnitude",))


def test_sweep_builds_evaluates_and_reports(ray_session, tiny_artifact, tmp_path):
    texts = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(4 + i % 7)) for i in range(30)]
    data = tmp_path / "set.csv"
    pd.DataFrame({"text": texts, "label": [f"label_{i % 3 == 0:d}" for i in range(30)]}).to_csv(
        data, index=False
    )
    cfg = SweepConfig(
        model=str(tiny_artifact),
        cache=str(tmp_path / "cache"),
        out=str(tmp_path / "out"),
        coarse_amounts=(50, 90),
        coarse_sample=12,
        fine_amounts=(60,),
        job=JobConfig(shard_rows=8, bootstrap_resamples=50),
    )
    sweep = run_sweep(DataSpec(str(data)), cfg)
    coarse, fine = sweep["phases"]["coarse"], sweep["phases"]["fine"]
    assert coarse["data"]["rows"] == 12 and fine["data"]["rows"] == 30
    assert list(coarse["variants"]) == [
        "base",
        "quant",
        "pruned-50",
        "pruned-90",
        "pruned-quant-50",
        "pruned-quant-90",
    ]
    assert coarse["variants"]["pruned-90"]["parameters"]["dense_sparsity"] == pytest.approx(0.9, abs=0.01)
    table = pd.read_csv(tmp_path / "out" / "sweep.csv")
    assert len(table) == 4 + 2 and set(table["phase"]) == {"coarse", "fine"}
    row = table[(table["phase"] == "fine") & (table["variant"] == "pruned-quant-60")].iloc[0]
    assert row["accuracy"] == pytest.approx(fine["variants"]["pruned-quant-60"]["accuracy"])
    assert row["size_vs_quant"] == pytest.approx(
        fine["variants"]["pruned-quant-60"]["size_bytes"] / fine["variants"]["quant"]["size_bytes"]
    )
    for name in ("accuracy_vs_pruning.png", "size_vs_accuracy.png", "coarse/roc.png", "fine/confusion.png"):
        assert imread(tmp_path / "out" / name)[..., :3].std() > 0.05
    report = (tmp_path / "out" / "sweep.md").read_text()
    assert "| fine | pruned-quant-60 | 60 |" in report

    built = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    again = run_sweep(DataSpec(str(data)), cfg)  # variants and predictions are reused, not redone
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()} == built
    assert again["phases"]["fine"]["job"]["timings"] == {}
    assert again["phases"]["fine"]["variants"] == fine["variants"]
