"""The MNIST sweep's outputs: results.csv and .json, the accuracy-vs-pruning plot, and report.md.

The report sets each measured figure beside the study's (shared/MISSION.md, section 2).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from evaluation.mnist_model import PruneMethod

__all__ = ["PLOT_FILE", "STUDY", "plot_accuracy", "render_report", "write_outputs"]

logger = logging.getLogger(__name__)

_MB = 1e6  # the study's MB: 8.83 MB is 2.2 M fp32 parameters, i.e. decimal megabytes
PLOT_FILE = "accuracy_vs_pruning.png"

# The study's figures (shared/MISSION.md, section 2): accuracy in %, size in MB.
STUDY = {
    "base": {"accuracy": 95.29, "size_mb": 8.83},
    "int8_dynamic": {"accuracy": 95.32, "size_mb": 2.22},
    "random_unstructured": {**{i / 10: "~95" for i in range(1, 7)}, 0.8: "61"},  # "held ~95% to 60%"
    "random_structured": {0.7: "74"},
    "l1_unstructured": {0.8: "94.7", 0.9: "92.8"},
}


_LABELS = {
    "base": "base (fp32)",
    "int8_dynamic": "dynamic int8",
    PruneMethod.RANDOM_UNSTRUCTURED: "random unstructured",
    PruneMethod.RANDOM_STRUCTURED: "random structured",
    PruneMethod.L1_UNSTRUCTURED: "L1 unstructured",
}


def _by_method(rows: list[dict[str, Any]]) -> dict[str, dict[float, dict[str, Any]]]:
    table: dict[str, dict[float, dict[str, Any]]] = {}
    for row in rows:
        table.setdefault(row["method"], {})[row["amount"]] = row
    return table


def plot_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy vs pruned share, one line per method, base and int8 as horizontal lines, study points as x."""
    table = _by_method(rows)
    fig = Figure(figsize=(10, 5.5), dpi=110)  # no pyplot: no global figure state, no display backend
    ax = fig.subplots()
    for method, colour in zip(PruneMethod, ("tab:orange", "tab:red", "tab:green"), strict=True):
        amounts = sorted(table[method])
        ax.plot(
            [a * 100 for a in amounts],
            [table[method][a]["accuracy"] * 100 for a in amounts],
            marker="o",
            color=colour,
            label=_LABELS[method],
        )
        study = sorted(STUDY[method].items())
        ax.plot(
            [a * 100 for a, _ in study],
            [float(v.lstrip("~")) for _, v in study],
            linestyle="none",
            marker="x",
            markersize=8,
            color=colour,
            label=f"study: {_LABELS[method]}",
        )
    for method, style, colour in (("base", "--", "black"), ("int8_dynamic", ":", "tab:blue")):
        accuracy = table[method][0.0]["accuracy"] * 100
        ax.axhline(
            accuracy,
            color=colour,
            linestyle=style,
            linewidth=1,
            label=f"{_LABELS[method]} ({accuracy:.2f}%)",
        )
    ax.set_xlabel("Weights pruned in every layer (%)")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title("MNIST 784-1200-840-300-10: test accuracy vs pruning (no fine-tuning after pruning)")
    ax.set_xlim(5, 95)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # outside: lines stay visible
    fig.tight_layout()
    fig.savefig(path)


def _pct(share: float) -> str:
    return f"{share * 100:.2f}%"


def render_report(results: dict[str, Any]) -> str:
    """report.md: run facts, base and int8 sizes, and the pruning sweep beside the study's figures."""
    table = _by_method(results["rows"])
    cfg = results["config"]
    machine = results["machine"]
    if cfg["weights"]:
        timing, trained = "no training", f"; weights loaded from `{cfg['weights']}`, not trained in this run"
    else:
        timing, trained = f"training {results['train_seconds']:.0f} s", ""
    load = machine["load_average_1min"]
    train_rows = f"{results['train_rows']:,} training rows, " if results["train_rows"] else ""
    lines = [
        "# MNIST compression sweep",
        "",
        f"- Run: {results['date_utc']}, {machine['cores']} cores, {machine['threads']} torch thread(s), "
        f"torch {machine['torch']}, Python {machine['python']}; wall time {results['wall_seconds']:.0f} s "
        f"({timing}); load average {load[0]} at the start, {load[1]} at the end.",
        f"- Data: {train_rows}{results['test_rows']:,} test rows from `{results['data_dir']}`.",
        f"- Model: 784-{'-'.join(map(str, cfg['hidden']))}-10, ReLU, "
        f"{results['num_parameters']:,} parameters; Adam lr {cfg['lr']}, {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, seed {cfg['seed']}{trained}.",
        "- Size: bytes of `torch.save(model.state_dict())` for every row (MB = 10^6 bytes). Pruned models",
        "  keep their zeros in dense tensors, so they are as large as the base model.",
        "- Pruning: `compression.compress` with each method's config, the same share of every layer's",
        "  weights (output layer included, as in the study), no fine-tuning afterwards; random masks",
        f"  seeded with {results['prune_seed']} (derived from the seed: the seed itself replays the initial",
        "  weights' random draws).",
        "",
        "| Model | Accuracy | Size (MB) | Study accuracy | Study size (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in ("base", "int8_dynamic"):
        row = table[method][0.0]
        lines.append(
            f"| {_LABELS[method]} | {_pct(row['accuracy'])} | {row['size_bytes'] / _MB:.2f} "
            f"| {STUDY[method]['accuracy']:.2f}% | {STUDY[method]['size_mb']:.2f} |"
        )
    header = " | ".join(f"{_LABELS[m]} | study" for m in PruneMethod)
    lines += ["", "Test accuracy after pruning (study: – where it gave no figure):", ""]
    lines += [f"| Pruned | {header} |", "|---:|" + "---:|---:|" * len(PruneMethod)]
    for amount in sorted({a for m in PruneMethod for a in table[m]}):
        cells = []
        for method in PruneMethod:
            row = table[method].get(amount)
            cells.append(_pct(row["accuracy"]) if row else "–")
            study = STUDY[method].get(amount)
            cells.append(f"{study}%" if study else "–")
        lines.append(f"| {amount * 100:.0f}% | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Random structured pruning zeroes whole output rows, the output layer's included: at x% it zeroes",
        "x/10 of the 10 class rows, whose logits become constant biases, which caps accuracy near (100-x)%.",
        "",
        f"![accuracy vs pruning]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """results.csv (sparsity left to the JSON), results.json, the plot and report.md, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        fields = ["method", "amount", "accuracy", "size_bytes"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")  # sparsity: JSON only
        writer.writeheader()
        writer.writerows(results["rows"])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_accuracy(results["rows"], out / PLOT_FILE)
    (out / "report.md").write_text(render_report(results))
    logger.info("wrote results.csv, results.json, report.md and %s to %s", PLOT_FILE, out)
