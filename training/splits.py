"""The rows a model is trained, validated and tested on, read and split reproducibly from a seed.

Fine-tuning and compression recovery read their data here, so a variant is trained on exactly the
rows its base was, tuned on the same validation rows, and gated on the same test rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import (
    DREADDIT_LABEL_NAMES,
    DataError,
    LabelledTable,
    dreaddit_paths,
    load_table,
    stratified_order,
)

__all__ = ["Splits", "load_splits"]


@dataclass(frozen=True)
class Splits:
    """Training, validation and test rows, and the classes in model output order."""

    train: LabelledTable
    validation: LabelledTable  # carved from the training file; may be empty
    test: LabelledTable
    classes: tuple[str, ...]  # id -> label name; from the training data
    test_name: str  # how variant.json names the test rows, e.g. "dreaddit_testing.csv"

    def ids(self, table: LabelledTable) -> list[int]:
        index = {name: i for i, name in enumerate(self.classes)}
        return [index[label] for label in table.labels]


def _cap(table: LabelledTable, max_rows: int | None, seed: int) -> LabelledTable:
    if max_rows is None or len(table) <= max_rows:
        return table
    return table.select(sorted(stratified_order(table.labels, seed)[:max_rows]))


def load_splits(cfg: Any) -> Splits:
    """Read, cap and split the data as `cfg` (a `training.finetune.FinetuneConfig`) says.

    Raises DataError when the data cannot train a classifier.
    """
    label_names = cfg.label_names
    if cfg.data is None:
        train_path, test_path = dreaddit_paths()
        label_names = label_names or DREADDIT_LABEL_NAMES
    else:
        train_path, test_path = Path(cfg.data), (Path(cfg.test_data) if cfg.test_data else None)
    columns = (cfg.text_column, cfg.label_column)
    train = _cap(load_table(train_path, *columns, label_names), cfg.max_rows, cfg.seed)
    if test_path is not None:
        test = _cap(load_table(test_path, *columns, label_names), cfg.max_rows, cfg.seed)
    else:
        order = stratified_order(train.labels, cfg.seed)
        n_test = max(1, round(cfg.test_fraction * len(train)))
        if n_test >= len(train):
            raise DataError(f"{train_path}: {len(train)} rows are too few to hold out a test set")
        test, train = train.select(sorted(order[:n_test])), train.select(sorted(order[n_test:]))
    test_name = test.path.name
    if test_path is None:
        test_name += f" (held-out {cfg.test_fraction:g} share, seed {cfg.seed})"
    # its own order (seed + 1): not the rows a held-out test split took first
    order = stratified_order(train.labels, (cfg.seed + 1) % 2**32)
    n_val = round(cfg.validation_fraction * len(train))
    validation, train = train.select(sorted(order[:n_val])), train.select(sorted(order[n_val:]))
    if len(train.label_names) < 2:
        raise DataError(
            f"{train_path}: training data must have at least 2 labels, got {list(train.label_names)}"
        )
    unseen = [name for name in test.label_names if name not in train.label_names]
    if unseen:
        raise DataError(f"{test.path}: labels {unseen} are in the test data but not in the training data")
    return Splits(
        train=train, validation=validation, test=test, classes=train.label_names, test_name=test_name
    )
