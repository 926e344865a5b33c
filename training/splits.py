"""The rows a model is trained, validated and tested on, read and split reproducibly from a seed.

Fine-tuning and compression recovery read their data here, so a variant is trained on exactly the
rows its base was, tuned on the same validation rows, and gated on the same test rows. Held-out
splits are stratified by label; PANDORA's are drawn by author, so no author is in two splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import DataError, LabelledTable, load_table, stratified_order
from training.sources import DREADDIT_LABEL_NAMES, SOURCES, dreaddit_paths, load_pandora

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


def _hold_out(
    table: LabelledTable, fraction: float, seed: int, split: str
) -> tuple[LabelledTable, LabelledTable]:
    """(`split` set, rest): a stratified `fraction` of the table's groups, each with all its rows.

    A table without groups (all but PANDORA's) has one group per row: a plain stratified row split.
    """
    groups = table.groups or list(range(len(table)))
    label_of = dict(zip(groups, table.labels, strict=True))  # one label per group: an author has one gender
    keys = list(label_of)
    n = round(fraction * len(keys))
    if split == "test":
        n = max(1, n)  # a validation set may be empty, a test set may not
    if n >= len(keys):
        what = "authors" if table.groups else "rows"
        raise DataError(f"{table.path}: {len(keys)} {what} are too few to hold out a {split} set")
    held = {keys[i] for i in stratified_order([label_of[k] for k in keys], seed)[:n]}
    return (
        table.select([i for i, g in enumerate(groups) if g in held]),
        table.select([i for i, g in enumerate(groups) if g not in held]),
    )


def _reader(cfg: Any) -> Callable[[Path], LabelledTable]:
    """The function that reads one data file as `cfg` says: a plain table, or PANDORA comments."""
    if cfg.profiles is None:
        return lambda path: load_table(path, cfg.text_column, cfg.label_column, cfg.label_names)
    # PANDORA ships the comment text as "body": the generic default "text" stands for that column
    # (as in evaluation.data), and the labels are the profiles' genders, not a column of the comments.
    text_column = "body" if cfg.text_column == "text" else cfg.text_column
    return lambda path: load_pandora(path, cfg.profiles, text_column=text_column, label_names=cfg.label_names)


def load_splits(cfg: Any) -> Splits:
    """Read, cap and split the data as `cfg` (a `training.finetune.FinetuneConfig`) says.

    Raises DataError when the data cannot train a classifier.
    """
    read = _reader(cfg)
    if cfg.data is None:
        names = cfg.label_names or DREADDIT_LABEL_NAMES
        table, test = (load_table(p, cfg.text_column, cfg.label_column, names) for p in dreaddit_paths())
    else:
        table = SOURCES[cfg.data](cfg.label_names) if cfg.data in SOURCES else read(Path(cfg.data))
        test = read(Path(cfg.test_data)) if cfg.test_data else None
    train = _cap(table, cfg.max_rows, cfg.seed)
    if test is not None:
        test, test_name = _cap(test, cfg.max_rows, cfg.seed), test.path.name
    else:
        test, train = _hold_out(train, cfg.test_fraction, cfg.seed, "test")
        test_name = f"{test.path.name} (held-out {cfg.test_fraction:g} share, seed {cfg.seed})"
    # its own order (seed + 1): not the rows a held-out test split took first
    validation, train = _hold_out(train, cfg.validation_fraction, (cfg.seed + 1) % 2**32, "validation")
    if len(train.label_names) < 2:
        raise DataError(
            f"{train.path}: training data must have at least 2 labels, got {list(train.label_names)}"
        )
    unseen = [name for name in test.label_names if name not in train.label_names]
    if unseen:
        raise DataError(f"{test.path}: labels {unseen} are in the test data but not in the training data")
    return Splits(
        train=train, validation=validation, test=test, classes=train.label_names, test_name=test_name
    )
