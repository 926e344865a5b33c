"""Reports of an evaluation job or sweep: `report.md`, CSV tables in the study's shape, PNG plots.

`write_report` takes what `evaluation.job.run_job` returns; `write_sweep_report` what
`evaluation.sweep.run_sweep` returns. Plots use matplotlib's `Figure` directly (the Agg canvas, no
pyplot state), so they render in Ray workers and headless CI alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "agreement_table",
    "metrics_table",
    "sweep_table",
    "write_report",
    "write_sweep_report",
]

logger = logging.getLogger(__name__)

_MB = 1e6  # decimal megabytes, as the study's sizes
_FEW = 10  # variants a plot can tell apart by colour and name each in its legend


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
                "size_mb": m["size_bytes"] / _MB,
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
            "accuracy_change_pts": 100 * (m["accuracy"] - _base(results)["accuracy"]),
        }
        for name, m in results["variants"].items()
        if "mcnemar" in m
    ]
    return pd.DataFrame(rows)


def _per_label_table(results: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"variant": name, "label": label, **scores}
            for name, m in results["variants"].items()
            for label, scores in m["per_label"].items()
        ]
    )


def _confusion_table(results: dict[str, Any]) -> pd.DataFrame:
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


def _base(results: dict[str, Any]) -> dict[str, Any]:
    return results["variants"][results["job"]["base"]]


def plot_roc(results: dict[str, Any], path: Path) -> None:
    """ROC curves of every variant on one figure (one panel per curved label: binary sets have one).

    Up to `_FEW` variants get distinct colours and the legend inside; more (a sweep) get colours
    along a colour map in variant order, int8 variants dashed, and the legend beside the panels.
    """
    variants = results["variants"]
    classes = list(next(iter(variants.values()))["roc"]) or ["-"]
    many = len(variants) > _FEW
    legend_cols = -(-len(variants) // 24) if many else 0
    fig = Figure(figsize=(6.5 * len(classes) + 3.2 * legend_cols, 6), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(classes)))
    colours = _colours(len(variants))
    for ax, label in zip(axes, classes, strict=True):
        for (name, m), colour in zip(variants.items(), colours, strict=True):
            curve = m["roc"].get(label)
            if curve is None:
                continue
            ax.plot(
                curve["fpr"],
                curve["tpr"],
                color=colour,
                linewidth=1.0 if many else 1.4,
                linestyle="--" if many and "quant" in name else "-",
                label=f"{name} (AUC {curve['auc']:.3f})",
            )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
        ax.set_title(f"ROC, positive = {label!r}, {next(iter(variants.values()))['rows']:,} rows")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    if many:
        axes[-1].legend(
            loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="x-small", ncol=legend_cols, frameon=False
        )
    else:
        for ax in axes:
            ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def plot_confusions(results: dict[str, Any], path: Path) -> None:
    """Confusion matrix of each variant as rates (row = true label), counts written in each cell."""
    variants = results["variants"]
    cols = min(4, len(variants))
    rows = -(-len(variants) // cols)
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows), dpi=110)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, m) in zip(axes, variants.items(), strict=False):
        rates = np.asarray(m["confusion_rates"])
        counts = np.asarray(m["confusion_counts"])
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        labels = m["labels"]
        ax.set_xticks(range(len(labels)), labels, fontsize="small")
        ax.set_yticks(range(len(labels)), labels, fontsize="small")
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    f"{rates[i, j]:.2f}\n({counts[i, j]})",
                    ha="center",
                    va="center",
                    color="white" if rates[i, j] > 0.6 else "black",
                    fontsize="small",
                )
        ax.set_title(f"{name}: acc {m['accuracy']:.3f}", fontsize="medium")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)


def plot_size_vs_accuracy(results: dict[str, Any], path: Path, sweep: pd.DataFrame | None = None) -> None:
    """Accuracy (with its bootstrap 95% interval) against bytes on disk, one point per variant.

    With `sweep` (rows of `sweep_table`), its variants are drawn as one line per method instead of
    one named point each, and only the other variants (base, quant) are named points.
    """
    fig = Figure(figsize=(9, 5.5), dpi=110)
    ax = fig.subplots()
    table = metrics_table(results)
    sizes = list(table["size_mb"])
    if sweep is not None and not sweep.empty:
        table = table[~table["variant"].isin(set(sweep["variant"]))]
        for (method, quant), group in sweep.groupby(["method", "quant"], sort=True):
            group = group.sort_values("amount_pct")
            ax.plot(
                group["size_mb"],
                100 * group["accuracy"],
                marker="o",
                markersize=4,
                linestyle="--" if quant else "-",
                label=f"{_series_name(method, quant)}, "
                f"{group['amount_pct'].min()}-{group['amount_pct'].max()}% pruned (right to left)",
            )
    named = len(table) <= _FEW
    for row, colour in zip(table.itertuples(), _colours(len(table)), strict=True):
        ax.errorbar(
            row.size_mb,
            100 * row.accuracy,
            yerr=[
                [100 * (row.accuracy - row.accuracy_ci95_low)],
                [100 * (row.accuracy_ci95_high - row.accuracy)],
            ],
            fmt="o",
            color=colour,
            capsize=4,
            markersize=7 if named else 4,
            label=row.variant,
        )
        if named:
            ax.annotate(
                row.variant, (row.size_mb, 100 * row.accuracy), textcoords="offset points", xytext=(6, 6)
            )
    ax.set_xlabel("Size on disk (MB)")
    ax.set_ylabel("Accuracy (%), bar: bootstrap 95% interval")
    ax.set_title(f"Size vs accuracy, {results['data']['description']}", fontsize="medium")
    ax.set_xlim(0, max(sizes) * 1.2)  # room for the largest point's name
    ax.grid(alpha=0.3)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small" if named else "x-small",
        ncol=1 if named else -(-len(table) // 24),
    )
    fig.tight_layout()
    fig.savefig(path)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= _FEW:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(frame: pd.DataFrame, digits: int = 4) -> list[str]:
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


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.10g")


def write_report(results: dict[str, Any], out: str | Path) -> Path:
    """report.md, metrics.csv, per_label.csv, confusion.csv, agreement.csv and the plots, into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = metrics_table(results)
    agreement = agreement_table(results)
    _write_csv(table, out / "metrics.csv")
    _write_csv(_per_label_table(results), out / "per_label.csv")
    _write_csv(_confusion_table(results), out / "confusion.csv")
    _write_csv(agreement, out / "agreement.csv")
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
        *_markdown(short),
        "",
        "## Agreement with base",
        "",
        *(_markdown(agreement) if not agreement.empty else ["(base only)"]),
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


def _series_name(method: str, quant: bool) -> str:
    return f"{method}{' + int8' if quant else ''}"


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
                    "size_mb": m["size_bytes"] / _MB,
                    "size_vs_base": m.get("size_vs_base"),
                    "size_vs_quant": m.get("size_vs_quant"),
                    "dense_sparsity": m["parameters"].get("dense_sparsity"),
                    "total_sparsity": m["parameters"].get("total_sparsity"),
                }
            )
    return pd.DataFrame(rows).sort_values(["phase", "method", "quant", "amount_pct"], kind="stable")


def plot_sweep(sweep: dict[str, Any], table: pd.DataFrame, path: Path) -> None:
    """Accuracy and macro F1 against the pruned share, one line per method (+int8), per phase."""
    phases = list(sweep["phases"])
    fig = Figure(figsize=(7 * len(phases), 5.5), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(phases), squeeze=False)).ravel()
    for ax, phase in zip(axes, phases, strict=True):
        results = sweep["phases"][phase]
        part = table[table["phase"] == phase]
        for ((method, quant), group), colour in zip(
            part.groupby(["method", "quant"], sort=True), _colours(8), strict=False
        ):
            group = group.sort_values("amount_pct")
            name = _series_name(method, quant)
            ax.plot(
                group["amount_pct"],
                100 * group["accuracy"],
                marker="o",
                color=colour,
                label=f"{name}: accuracy",
            )
            ax.plot(
                group["amount_pct"],
                100 * group["f1_macro"],
                marker="x",
                linestyle="--",
                color=colour,
                alpha=0.7,
                label=f"{name}: macro F1",
            )
        for ref, style in (("base", "-"), ("quant", ":")):
            if ref in results["variants"]:
                acc = 100 * results["variants"][ref]["accuracy"]
                ax.axhline(
                    acc, color="black", linestyle=style, linewidth=1, label=f"{ref} accuracy ({acc:.1f}%)"
                )
        majority = (
            100
            * max(np.sum(row) for row in _base_of(results)["confusion_counts"])
            / _base_of(results)["rows"]
        )
        ax.axhline(
            majority, color="grey", linestyle="-.", linewidth=1, label=f"majority class ({majority:.1f}%)"
        )
        rows = next(iter(results["variants"].values()))["rows"]
        ax.set_title(f"{phase}: {rows:,} rows")
        ax.set_xlabel("Encoder Linear weights pruned (%)")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)


def _base_of(results: dict[str, Any]) -> dict[str, Any]:
    return results["variants"][results["job"]["base"]]


def write_sweep_report(sweep: dict[str, Any], out: str | Path) -> Path:
    """sweep.md, sweep.csv and the plots (accuracy vs pruning, size vs accuracy) into `out`."""
    out = Path(out)
    table = sweep_table(sweep)
    _write_csv(table, out / "sweep.csv")
    plot_sweep(sweep, table, out / "accuracy_vs_pruning.png")
    last = list(sweep["phases"])[-1]
    plot_size_vs_accuracy(sweep["phases"][last], out / "size_vs_accuracy.png", table[table["phase"] == last])
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
                        "size_mb": m["size_bytes"] / _MB,
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
    sizes = table[table["phase"] == last][
        ["variant", "amount_pct", "size_mb", "size_vs_base", "size_vs_quant"]
    ]
    lines = [
        "# Pruning sweep",
        "",
        f"- Data: {sweep['data']}. Protocol: {sweep['protocol']}",
        f"- Command: `{sweep['command']}`; {sweep['machine']['date']}, load average "
        f"{sweep['machine']['load_avg_1_5_15m']}; {sweep['wall_s']:.0f} s including variant builds.",
        "",
        "## References",
        "",
        *_markdown(pd.DataFrame(refs)),
        "",
        "## Metrics per pruning amount",
        "",
        *_markdown(table[columns]),
        "",
        "## Size per amount, relative to base and to quant",
        "",
        *_markdown(sizes, 3),
        "",
        "![Accuracy vs pruning](accuracy_vs_pruning.png)",
        "",
        "![Size vs accuracy](size_vs_accuracy.png)",
        "",
        "Each phase's full per-variant report (ROC, confusion matrices, agreement) is in",
        "`<phase>/report.md`.",
    ]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    logger.info("wrote sweep.md, sweep.csv and plots to %s", out)
    return out / "sweep.md"
