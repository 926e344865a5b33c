"""The pruning sweep: the study's amounts, variants built once into a cache, one report over its phases
(one-shot coarse and fine, and pruning with recovery)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread

from evaluation.data import DataSpec
from evaluation.job import JobConfig
from evaluation.sweep import SweepConfig, main, run_sweep
from evaluation.sweep_plan import coarse_amounts, recovery_variants, sweep_variants
from loading.accuracy import read_accuracy
from loading.artifact import read_variant_info
from tests.conftest import tiny_classifier
from training import finetune
from training.recover import RecoveryConfig

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
        phases=("coarse", "fine"),
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


def test_recovery_names_follow_the_trainers_grammar():
    points = recovery_variants(("l1-kd", "structured-kd"), (50, 80))
    assert list(points) == [
        "pruned-kd-50",
        "pruned-kd-80",
        "pruned-kd-quant-50",
        "pruned-kd-quant-80",
        "pruned-kd-structured-50",
        "pruned-kd-structured-80",
        "pruned-kd-structured-quant-50",
        "pruned-kd-structured-quant-80",
    ]
    assert points["pruned-kd-structured-quant-80"] == {
        "method": "structured-kd",
        "quant": True,
        "amount_pct": 80,
    }
    with pytest.raises(ValueError, match="recovery methods must be some of"):
        SweepConfig(recovery_methods=("movement",))
    with pytest.raises(ValueError, match="phases must be some of"):
        SweepConfig(phases=("recover",))
    assert list(SweepConfig(phases=("recovery",)).plan()) == ["recovery"]


CALM = ["a quiet walk in the park", "tea with an old friend", "sunny morning by the lake"]
STRESS = ["the deadline is tomorrow", "i cannot sleep at all", "rent is due and no money"]


@pytest.fixture(scope="module")
def tuned_base(tmp_path_factory, tokenizer) -> tuple[Path, Path]:
    """(a tiny base fine-tuned by training.finetune, so it records its splits; its training table)."""
    root = tmp_path_factory.mktemp("recovery")
    encoder = root / "encoder"
    tiny_classifier().save_pretrained(str(encoder), safe_serialization=True)
    tokenizer.save_pretrained(str(encoder))
    rows = [
        {"text": f"{(CALM, STRESS)[i % 2][i % 3]} {i}", "label": ("calm", "stress")[i % 2]} for i in range(40)
    ]
    data = root / "train.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    args = ["--data", str(data), "--model", str(encoder), "--out", str(root / "base"), "--batch-size", "8"]
    assert finetune.main(args) == 0
    return root / "base", data


def test_recovery_phase_builds_evaluates_and_reports(ray_session, tuned_base, tmp_path):
    base, data = tuned_base
    cfg = SweepConfig(
        model=str(base),
        cache=str(tmp_path / "cache"),
        out=str(tmp_path / "out"),
        fine_amounts=(50,),
        recovery_amounts=(50,),
        recovery=RecoveryConfig(epochs=1, batch_size=8),
        phases=("fine", "recovery"),
        job=JobConfig(shard_rows=16, bootstrap_resamples=50),
    )
    sweep = run_sweep(DataSpec(str(data)), cfg)
    recovery = sweep["phases"]["recovery"]
    names = ["pruned-kd-50", "pruned-kd-quant-50", "pruned-kd-structured-50", "pruned-kd-structured-quant-50"]
    assert list(recovery["variants"]) == ["base", "quant", *names]
    assert recovery["data"]["rows"] == 40  # the full set
    for name in names:
        info = read_variant_info(tmp_path / "cache" / name)
        assert info.parameters["recovery"]["epochs"] == 1 and read_accuracy(info) is not None
    assert recovery["variants"]["pruned-kd-50"]["parameters"]["dense_sparsity"] == pytest.approx(
        0.5, abs=0.01
    )
    structured = recovery["variants"]["pruned-kd-structured-50"]
    assert structured["size_bytes"] < recovery["variants"]["base"]["size_bytes"]  # physically smaller
    assert sweep["recovery"]["epochs"] == 1

    rows = pd.read_csv(tmp_path / "out" / "recovery.csv")
    assert list(rows["series"]) == [
        "l1",
        "l1 + int8",
        "l1-kd",
        "l1-kd + int8",
        "structured-kd",
        "structured-kd + int8",
    ]
    assert rows.loc[rows["variant"] == "pruned-kd-quant-50", "accuracy"].item() == pytest.approx(
        recovery["variants"]["pruned-kd-quant-50"]["accuracy"]
    )
    assert imread(tmp_path / "out" / "accuracy_vs_pruning_recovery.png")[..., :3].std() > 0.05
    report = (tmp_path / "out" / "sweep.md").read_text()
    assert "## Pruning with recovery" in report
    assert (
        "| pruned_pct | l1 | l1 + int8 | l1-kd | l1-kd + int8 | structured-kd | structured-kd + int8 |"
        in report
    )
    assert (
        json.loads((tmp_path / "out" / "sweep.json").read_text())["points"]["pruned-kd-50"]["method"]
        == "l1-kd"
    )

    def built() -> dict[str, int]:  # base: training.build re-records its score in its variant.json
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir() if p.name != "base"}

    before = built()
    again = run_sweep(DataSpec(str(data)), SweepConfig(**{**cfg.__dict__, "phases": ("recovery",)}))
    assert built() == before and again["phases"]["recovery"]["job"]["timings"] == {}
    assert list(again["phases"]) == ["recovery"]
    assert "## Pruning with recovery" in (tmp_path / "out" / "sweep.md").read_text()


def test_sweep_cli_names_a_bad_recovery_method(capsys):
    assert main(["--phases", "recovery", "--recovery-methods", "movement"]) == 2
    assert "recovery methods must be some of" in capsys.readouterr().err
