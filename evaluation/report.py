"""Reports of an evaluation job or sweep: `report.md` (or `sweep.md`) beside its CSV tables and PNG plots.

`write_report` takes what `evaluation.job.run_job` returns; `write_sweep_report` what
`evaluation.sweep.run_sweep` returns. The tables come from `evaluation.tables`, the plots from
`evaluation.plots`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.plots import plot_confusions, plot_recovery, plot_roc, plot_size_vs_accuracy, plot_sweep
from evaluation.tables import (
    MB,
    agreement_table,
    confusion_table,
    markdown_lines,
    metrics_table,
    per_label_table,
    recovery_accuracy_table,
    recovery_rows,
    sweep_table,
    write_csv,
)

__all__ = ["render_report", "write_report", "write_sweep_report"]

logger = logging.getLogger(__name__)


def write_report(results: dict[str, Any], out: str | Path) -> Path:
    """report.md, metrics.csv, per_label.csv, confusion.csv, agreement.csv and the plots, into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = metrics_table(results)
    agreement = agreement_table(results)
    write_csv(table, out / "metrics.csv")
    write_csv(per_label_table(results), out / "per_label.csv")
    write_csv(confusion_table(results), out / "confusion.csv")
    write_csv(agreement, out / "agreement.csv")
    plot_roc(results, out / "roc.png")
    plot_confusions(results, out / "confusion.png")
    plot_size_vs_accuracy(results, out / "size_vs_accuracy.png")
    (out / "report.md").write_text("\n".join(render_report(results, table, agreement)) + "\n")
    logger.info("wrote report.md, CSV tables and plots to %s", out)
    return out / "report.md"


def render_report(results: dict[str, Any], table: pd.DataFrame, agreement: pd.DataFrame) -> list[str]:
    """report.md's lines for one job."""
    job, data = results["job"], results["data"]
    machine = job["machine"]
    short = table[
        [
            c
            for c in table.columns
            if c not in ("rows", "precision_macro", "recall_macro", "accuracy_ci95_low", "accuracy_ci95_high")
        ]
    ].copy()
    short.insert(
        2,
        "accuracy_ci95",
        [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in table[["accuracy_ci95_low", "accuracy_ci95_high"]].values],
    )
    skipped = f", {data['skipped_empty_rows']} empty texts skipped" if data["skipped_empty_rows"] else ""
    lines = [
        "# Evaluation report",
        "",
        f"- Data: {data['description']}: {data['rows']:,} rows, labels {data['labels']}{skipped}.",
        f"- Job: {job['workers']} workers x {job['cpus_per_worker']} CPU, batch {job['batch_size']}, "
        f"shards of {job['shard_rows']} rows, kernels int8={job['int8_kernel']} "
        f"sparse={job['sparse_kernel']}; "
        f"{machine['date']}, {machine['cores']} cores, load average {machine['load_avg_1_5_15m']}.",
        "- Accuracy interval: bootstrap 95% percentile interval "
        f"({job['bootstrap_resamples']} resamples, seed {job['seed']}). McNemar: exact two-sided binomial "
        "test on the rows exactly one of base and the variant gets right (small p: a real difference, "
        "not noise).",
        "",
        "## Metrics per variant",
        "",
        *markdown_lines(short),
        "",
        "## Agreement with base",
        "",
        *(markdown_lines(agreement) if not agreement.empty else ["(base only)"]),
        "",
        "## Plots",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Confusion matrices](confusion.png)",
        "",
        "![Size vs accuracy](size_vs_accuracy.png)",
        "",
        "Tables: `metrics.csv`, `per_label.csv`, `confusion.csv`, `agreement.csv`; raw numbers in",
        "`metrics.json`;",
        "predictions per row in `predictions/<variant>/shard-*.parquet`.",
    ]
    return lines


def write_sweep_report(sweep: dict[str, Any], out: str | Path) -> Path:
    """sweep.md, sweep.csv and the plots (accuracy vs pruning, size vs accuracy) into `out`; with a
    recovery phase also recovery.csv and accuracy_vs_pruning_recovery.png."""
    out = Path(out)
    table = sweep_table(sweep)
    write_csv(table, out / "sweep.csv")
    plot_sweep(sweep, table, out / "accuracy_vs_pruning.png")
    # Sizes from the phases on the full set (one point per variant); the coarse one only if alone.
    full = [p for p in sweep["phases"] if p != "coarse"] or list(sweep["phases"])
    on_full = table[table["phase"].isin(full)]
    plot_size_vs_accuracy(sweep["phases"][full[-1]], out / "size_vs_accuracy.png", on_full)
    refs = []
    for phase, results in sweep["phases"].items():
        for ref in ("base", "quant"):
            if ref in results["variants"]:
                m = results["variants"][ref]
                refs.append(
                    {
                        "phase": phase,
                        "variant": ref,
                        "rows": m["rows"],
                        "accuracy": m["accuracy"],
                        "f1_macro": m["f1_macro"],
                        "auc": m["auc"],
                        "size_mb": m["size_bytes"] / MB,
                    }
                )
    columns = [
        "phase",
        "variant",
        "amount_pct",
        "accuracy",
        "f1_macro",
        "auc",
        "agreement_with_base",
        "mcnemar_p",
    ]
    sizes = on_full[["variant", "amount_pct", "size_mb", "size_vs_base", "size_vs_quant"]]
    lines = [
        "# Pruning sweep",
        "",
        f"- Data: {sweep['data']}. Protocol: {sweep['protocol']}",
        f"- Command: `{sweep['command']}`; {sweep['machine']['date']}, load average "
        f"{sweep['machine']['load_avg_1_5_15m']}; {sweep['wall_s']:.0f} s including variant builds.",
        "",
        "## References",
        "",
        *markdown_lines(pd.DataFrame(refs)),
        "",
        "## Metrics per pruning amount",
        "",
        *markdown_lines(table[columns]),
        "",
        "## Size per amount, relative to base and to quant",
        "",
        *markdown_lines(sizes, 3),
        "",
        "![Accuracy vs pruning](accuracy_vs_pruning.png)",
        "",
        "![Size vs accuracy](size_vs_accuracy.png)",
        "",
        *(_recovery_section(sweep, table, out) if "recovery" in sweep["phases"] else []),
        "Each phase's full per-variant report (ROC, confusion matrices, agreement) is in",
        "`<phase>/report.md`.",
    ]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    logger.info("wrote sweep.md, sweep.csv and plots to %s", out)
    return out / "sweep.md"


def _recovery_section(sweep: dict[str, Any], table: pd.DataFrame, out: Path) -> list[str]:
    """sweep.md's recovery section; writes recovery.csv and accuracy_vs_pruning_recovery.png."""
    rows = recovery_rows(table)
    write_csv(rows, out / "recovery.csv")
    plot_recovery(sweep["phases"]["recovery"], rows, out / "accuracy_vs_pruning_recovery.png")
    details = rows[rows["phase"] == "recovery"].copy()
    details["accuracy_ci95"] = [
        f"[{lo:.4f}, {hi:.4f}]" for lo, hi in details[["accuracy_ci95_low", "accuracy_ci95_high"]].values
    ]
    columns = ["variant", "series", "amount_pct", "accuracy", "accuracy_ci95", "f1_macro"]
    columns += ["agreement_with_base", "mcnemar_p", "size_vs_base", "train_s"]
    recovery = sweep.get("recovery") or {}
    knobs = ("epochs", "batch_size", "lr", "kd_weight", "temperature")
    settings = ", ".join(f"{k} {recovery[k]}" for k in knobs if k in recovery) or "not recorded"
    return [
        "## Pruning with recovery",
        "",
        "Accuracy (%) per pruned share: one-shot L1 (the fine phase; – where it has no such amount) and",
        "the methods that prune while distilling from base (training/recover.py), each without and with",
        f"int8. Structured: the share of heads and FFN neurons per layer. Recovery: {settings}.",
        "",
        *markdown_lines(recovery_accuracy_table(rows), 2),
        "",
        *markdown_lines(details[columns]),
        "",
        "![Accuracy vs pruning, with and without recovery](accuracy_vs_pruning_recovery.png)",
        "",
    ]
