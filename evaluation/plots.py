"""The evaluation report's plots: ROC curves, confusion matrices, size vs accuracy, accuracy vs pruning
(one-shot, and with recovery).

They use matplotlib's `Figure` directly (the Agg canvas, no pyplot state), so they render in Ray
workers and headless CI alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from evaluation.tables import base_metrics, metrics_table

__all__ = ["plot_confusions", "plot_recovery", "plot_roc", "plot_size_vs_accuracy", "plot_sweep"]

_FEW = 10  # variants a plot can tell apart by colour and name each in its legend


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
        rows = next(iter(results["variants"].values()))["rows"]
        _reference_lines(ax, results, " accuracy")
        _finish(ax, f"{phase}: {rows:,} rows", "Encoder Linear weights pruned (%)", "%")
    fig.tight_layout()
    fig.savefig(path)


def plot_recovery(results: dict[str, Any], rows: pd.DataFrame, path: Path) -> None:
    """Accuracy against the pruned share for one-shot L1 and each recovery method (rows of
    `recovery_rows`), int8 dashed, with bootstrap 95% intervals; base and quant from `results`."""
    fig = Figure(figsize=(9, 5.5), dpi=110)
    ax = fig.subplots()
    methods = list(dict.fromkeys(rows.sort_values(["phase", "method"], kind="stable")["method"]))
    colours = dict(zip(methods, _colours(len(methods)), strict=True))
    for (method, quant), group in rows.groupby(["method", "quant"], sort=False):
        group = group.sort_values("amount_pct")
        accuracy = 100 * group["accuracy"]
        ax.errorbar(
            group["amount_pct"] + (0.4 if quant else -0.4),  # int8 beside its float twin, not on it
            accuracy,
            yerr=[accuracy - 100 * group["accuracy_ci95_low"], 100 * group["accuracy_ci95_high"] - accuracy],
            color=colours[method],
            linestyle="--" if quant else "-",
            marker="s" if quant else "o",
            markersize=5,
            capsize=3,
            label=_series_name(method, quant) + (" (one-shot, fine phase)" if method == "l1" else ""),
        )
    _reference_lines(ax, results)
    ax.set_xlim(rows["amount_pct"].min() - 5, rows["amount_pct"].max() + 5)
    _finish(
        ax,
        f"Pruning with and without recovery, {base_metrics(results)['rows']:,} rows",
        "Pruned (%): L1 = encoder Linear weights; structured = heads and FFN neurons per layer",
        "Accuracy (%), bar: bootstrap 95% interval",
    )
    fig.tight_layout()
    fig.savefig(path)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= _FEW:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


def _series_name(method: str, quant: bool) -> str:
    return f"{method}{' + int8' if quant else ''}"


def _reference_lines(ax: Any, results: dict[str, Any], what: str = "") -> None:
    """Horizontal lines at base's and quant's accuracy and at the majority class's share."""
    for ref, style in (("base", "-"), ("quant", ":")):
        if ref in results["variants"]:
            acc = 100 * results["variants"][ref]["accuracy"]
            ax.axhline(acc, color="black", linestyle=style, linewidth=1, label=f"{ref}{what} ({acc:.1f}%)")
    base = base_metrics(results)
    majority = 100 * max(np.sum(row) for row in base["confusion_counts"]) / base["rows"]
    ax.axhline(majority, color="grey", linestyle="-.", linewidth=1, label=f"majority class ({majority:.1f}%)")


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title, labels, a 0-100 y axis, grid and legend: what every accuracy-vs-pruning panel shares."""
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="x-small")
