"""Reports: the CSV tables hold the metrics they were given; every plot is a real PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from evaluation.metrics import variant_metrics
from evaluation.report import write_report

LABELS = ["neg", "pos"]


def _predictions(truth: np.ndarray, p_pos: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": range(len(truth)),
            "label": np.where(truth, "pos", "neg"),
            "predicted": np.where(p_pos > 0.5, "pos", "neg"),
            "prob_neg": 1 - p_pos,
            "prob_pos": p_pos,
        }
    )


@pytest.fixture
def results() -> dict:
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.5
    base = _predictions(truth, np.clip(truth * 0.5 + rng.random(200) * 0.5, 0, 1))
    noisy = _predictions(truth, np.clip(truth * 0.2 + rng.random(200) * 0.8, 0, 1))
    sizes = {"base": 90_000_000, "quant": 24_000_000, "pruned-75": 60_000_000}
    variants = {}
    for name, frame in {"base": base, "quant": base, "pruned-75": noisy}.items():
        m = variant_metrics(frame, LABELS, None if name == "base" else base, resamples=100)
        m.update(size_bytes=sizes[name], size_vs_base=sizes[name] / sizes["base"])
        m["size_vs_quant"] = sizes[name] / sizes["quant"]
        variants[name] = m
    machine = {"date": "2026-11-25T00:00:00+00:00", "cores": 2, "load_avg_1_5_15m": [0.1, 0.1, 0.1]}
    return {
        "variants": variants,
        "data": {"description": "synthetic", "rows": 200, "labels": LABELS, "skipped_empty_rows": 3},
        "job": {
            "base": "base",
            "workers": 2,
            "cpus_per_worker": 1.0,
            "batch_size": 32,
            "shard_rows": 128,
            "int8_kernel": "shared",
            "sparse_kernel": "shared",
            "bootstrap_resamples": 100,
            "seed": 0,
            "machine": machine,
        },
    }


def test_report_tables_hold_the_metrics(results, tmp_path):
    report = write_report(results, tmp_path).read_text()
    table = pd.read_csv(tmp_path / "metrics.csv").set_index("variant")
    assert table.loc["pruned-75", "accuracy"] == pytest.approx(results["variants"]["pruned-75"]["accuracy"])
    assert table.loc["quant", "agreement_with_base"] == 1.0 and table.loc["quant", "mcnemar_p"] == 1.0
    assert table.loc["quant", "size_vs_base"] == pytest.approx(24 / 90)
    assert pd.isna(table.loc["base", "agreement_with_base"])
    agreement = pd.read_csv(tmp_path / "agreement.csv")
    assert agreement["variant"].tolist() == ["quant", "pruned-75"]
    confusion = pd.read_csv(tmp_path / "confusion.csv")
    counts = confusion[confusion["variant"] == "pruned-75"]["count"].tolist()
    assert counts == sum(results["variants"]["pruned-75"]["confusion_counts"], [])
    assert set(pd.read_csv(tmp_path / "per_label.csv")["label"]) == set(LABELS)
    assert "3 empty texts skipped" in report and "| pruned-75 |" in report
    for name in ("roc.png", "confusion.png", "size_vs_accuracy.png"):
        assert f"({name})" in report
        pixels = imread(tmp_path / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas
