"""The evaluation report's tables: pandas frames in the study's shape, as CSV and as Markdown lines.

Each takes what `evaluation.job.run_job` (or `evaluation.sweep.run_sweep`) returns; `evaluation.report`
writes them, `evaluation.plots` draws from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MB",
    "agreement_table",
    "base_metrics",
    "confusion_table",
    "markdown_lines",
    "metrics_table",
    "per_label_table",
    "recovery_accuracy_table",
    "recovery_rows",
    "sweep_table",
    "write_csv",
]

MB = 1e6  # decimal megabytes, as the study's sizes


def base_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The metrics of the variant the others are compared against."""
    return results["variants"][results["job"]["base"]]


def metrics_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per variant: the study's metrics table plus intervals, sizes and the test against base."""
    rows = []
    for name, m in results["variants"].items():
        positive = m["labels"][-1]  # binary: the second label, the one ROC and AUC are computed for
        mcnemar = m.get("mcnemar", {})
        rows.append(
            {
                "variant": name,
                "rows": m["rows"],
                "accuracy": m["accuracy"],
                "accuracy_ci95_low": m["accuracy_ci95"][0],
                "accuracy_ci95_high": m["accuracy_ci95"][1],
                f"precision_{positive}": m["per_label"][positive]["precision"],
                f"recall_{positive}": m["per_label"][positive]["recall"],
                f"f1_{positive}": m["per_label"][positive]["f1"],
                "precision_macro": m["precision_macro"],
                "recall_macro": m["recall_macro"],
                "f1_macro": m["f1_macro"],
                "auc": m["auc"],
                "size_mb": m["size_bytes"] / MB,
                "size_vs_base": m.get("size_vs_base"),
                "size_vs_quant": m.get("size_vs_quant"),
                "agreement_with_base": m.get("agreement_with_base"),
                "mcnemar_p": mcnemar.get("p_value"),
            }
        )
    return pd.DataFrame(rows)


def agreement_table(results: dict[str, Any]) -> pd.DataFrame:
    """Agreement with base and McNemar's discordant counts, for every variant but base."""
    rows = [
        {
            "variant": name,
            "agreement_with_base": m["agreement_with_base"],
            "base_only_correct": m["mcnemar"]["base_only_correct"],
            "variant_only_correct": m["mcnemar"]["variant_only_correct"],
            "mcnemar_p": m["mcnemar"]["p_value"],
            "accuracy_change_pts": 100 * (m["accuracy"] - base_metrics(results)["accuracy"]),
        }
        for name, m in results["variants"].items()
        if "mcnemar" in m
    ]
    return pd.DataFrame(rows)


def per_label_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per (variant, label): precision, recall, F1 and support."""
    return pd.DataFrame(
        [
            {"variant": name, "label": label, **scores}
            for name, m in results["variants"].items()
            for label, scores in m["per_label"].items()
        ]
    )


def confusion_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per (variant, true label, predicted label): count and rate (of the true label's rows)."""
    rows = []
    for name, m in results["variants"].items():
        labels = m["labels"]
        for i, true in enumerate(labels):
            for j, predicted in enumerate(labels):
                rows.append(
                    {
                        "variant": name,
                        "true": true,
                        "predicted": predicted,
                        "count": m["confusion_counts"][i][j],
                        "rate": m["confusion_rates"][i][j],
                    }
                )
    return pd.DataFrame(rows)


def sweep_table(sweep: dict[str, Any]) -> pd.DataFrame:
    """One row per (phase, pruned variant): accuracy, F1, AUC, size relative to base and quant, agreement."""
    rows = []
    for phase, results in sweep["phases"].items():
        for name, m in results["variants"].items():
            point = sweep["points"].get(name)
            if point is None:
                continue  # base and quant: the references
            rows.append(
                {
                    "phase": phase,
                    "variant": name,
                    "method": point["method"],
                    "quant": point["quant"],
                    "amount_pct": point["amount_pct"],
                    "rows": m["rows"],
                    "accuracy": m["accuracy"],
                    "accuracy_ci95_low": m["accuracy_ci95"][0],
                    "accuracy_ci95_high": m["accuracy_ci95"][1],
                    "f1_macro": m["f1_macro"],
                    "auc": m["auc"],
                    "agreement_with_base": m.get("agreement_with_base"),
                    "mcnemar_p": m.get("mcnemar", {}).get("p_value"),
                    "size_mb": m["size_bytes"] / MB,
                    "size_vs_base": m.get("size_vs_base"),
                    "size_vs_quant": m.get("size_vs_quant"),
                    "dense_sparsity": m["parameters"].get("dense_sparsity"),
                    "total_sparsity": m["parameters"].get("total_sparsity"),
                    "train_s": m["parameters"].get("train_seconds"),  # recovery variants only
                }
            )
    return pd.DataFrame(rows).sort_values(["phase", "method", "quant", "amount_pct"], kind="stable")


def _series(method: str, quant: bool) -> str:
    return f"{method}{' + int8' if quant else ''}"


def recovery_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The recovery phase's rows of `sweep_table`, with one-shot L1 from the fine phase at the same
    amounts beside them (the study's method, on the same full set), each named by a `series` column."""
    recovered = table[table["phase"] == "recovery"]
    one_shot = table[
        (table["phase"] == "fine")
        & (table["method"] == "l1")
        & table["amount_pct"].isin(set(recovered["amount_pct"]))
    ]
    rows = pd.concat([one_shot, recovered], ignore_index=True)
    rows.insert(2, "series", [_series(m, q) for m, q in zip(rows["method"], rows["quant"], strict=True)])
    return rows


def recovery_accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per amount (rows) and series (columns: one-shot L1, then each recovery method;
    each without, then with int8), from `recovery_rows`."""
    order = list(dict.fromkeys(rows.sort_values(["phase", "method", "quant"], kind="stable")["series"]))
    wide = rows.pivot_table(index="amount_pct", columns="series", values="accuracy", aggfunc="first")
    wide = 100 * wide.reindex(columns=[s for s in order if s in wide.columns])
    return wide.reset_index().rename(columns={"amount_pct": "pruned_pct"})


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_lines(frame: pd.DataFrame, digits: int = 4) -> list[str]:
    """A Markdown table of `frame`, one line per row; p-values keep two significant digits."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        cells = [
            f"{v:.2g}"
            if column.endswith("_p") and isinstance(v, float) and not np.isnan(v)
            else _fmt(v, digits)
            for column, v in zip(frame.columns, row, strict=True)
        ]  # p-values: two significant digits, so 3e-40 does not print as 0.0000
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """`frame` as CSV with 10 significant digits: enough to recompute the report's figures."""
    frame.to_csv(path, index=False, float_format="%.10g")
