"""The labelled sets an evaluation runs on: the offline default, any table file, or PANDORA.

Reading and checking one table is `training.data`'s job (the same rules for fine-tuning and
evaluating: missing columns, empty files, missing labels and non-text values stop the load and name
file and rows; empty texts are reported and skipped; PANDORA's two files are joined there too, since
fine-tuning reads them as well). This module adds what only evaluation needs: balanced sampling, and
refusing labels the model cannot predict before any worker starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data import DataError, LabelledTable, load_table, parse_label_names, stratified_order
from training.sources import DREADDIT_LABEL_NAMES, dreaddit_paths, load_pandora

__all__ = [
    "DataError",
    "DataSpec",
    "balanced_sample",
    "check_labels",
    "load_eval_data",
    "model_labels",
]


@dataclass(frozen=True)
class DataSpec:
    """Which rows to evaluate on."""

    data: str | None = None  # a CSV/Parquet/JSONL file; None: the Dreaddit test split (offline default)
    text_column: str = "text"  # PANDORA: the comments' text column (PANDORA ships it as "body")
    label_column: str = "label"  # ignored for PANDORA, whose labels come from the profiles' gender
    label_names: str | None = None  # "0=negative,1=positive": rename raw labels to the model's names
    profiles: str | None = None  # PANDORA author profiles (author, gender): `data` is then its comments
    sample: int | None = None  # evaluate a balanced sample of this many rows
    seed: int = 0  # for the sample

    def __post_init__(self) -> None:
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"sample must be >= 1, got {self.sample}")
        if self.profiles is not None and self.data is None:
            raise ValueError("profiles (PANDORA) must come with data, its comments file, got data=None")

    def describe(self) -> str:
        """A short human-readable name of the set, for reports."""
        what = "Dreaddit test split" if self.data is None else Path(self.data).name
        if self.profiles is not None:
            what = f"PANDORA {what} + {Path(self.profiles).name}"
        return what if self.sample is None else f"{what}, balanced sample of {self.sample} (seed {self.seed})"


def load_eval_data(spec: DataSpec) -> LabelledTable:
    """The rows `spec` names, checked, optionally sampled."""
    names = parse_label_names(spec.label_names) if spec.label_names else None
    if spec.profiles is not None:
        text_column = spec.text_column if spec.text_column != "text" else "body"
        table = load_pandora(spec.data, spec.profiles, text_column=text_column, label_names=names)
    elif spec.data is None:
        table = load_table(dreaddit_paths()[1], "text", "label", names or DREADDIT_LABEL_NAMES)
    else:
        table = load_table(spec.data, spec.text_column, spec.label_column, names)
    if spec.sample is not None:
        table = balanced_sample(table, spec.sample, spec.seed)
    return table


def balanced_sample(table: LabelledTable, n: int, seed: int = 0) -> LabelledTable:
    """`n` rows with the labels as equal as the data allows, in file order; seeded.

    Each label gets n // labels rows (the remainder to the first labels); a label with fewer rows
    gives all of them and the rest is filled from the others, so the sample has n rows whenever the
    table does.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n >= len(table):
        return table
    order = stratified_order(table.labels, seed)  # a seeded shuffle within each label
    by_label: dict[str, list[int]] = {name: [] for name in table.label_names}
    for i in order:
        by_label[table.labels[i]].append(i)
    quota = {name: n // len(by_label) + (k < n % len(by_label)) for k, name in enumerate(by_label)}
    picked = [i for name, rows in by_label.items() for i in rows[: quota[name]]]
    taken = set(picked)
    picked += [i for i in order if i not in taken][: n - len(picked)]
    return table.select(sorted(picked))


def model_labels(model_dir: str | Path) -> list[str]:
    """The label names a saved classifier predicts (its config's id2label), in logit order."""
    config_path = Path(model_dir) / "config.json"
    try:
        id2label = json.loads(config_path.read_text())["id2label"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise DataError(f"{config_path}: cannot read the model's labels (id2label): {exc}") from exc
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def check_labels(table: LabelledTable, labels: Sequence[str], model: str = "the model") -> None:
    """DataError if the table has labels `model` cannot predict (compared by name)."""
    known = set(labels)
    unknown = [name for name in table.label_names if name not in known]
    if unknown:
        rows = [table.rows[i] for i, lab in enumerate(table.labels) if lab not in known]
        shown = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        raise DataError(
            f"{table.path}: labels {unknown} in {len(rows)} rows ({shown}) are not among the labels "
            f"{list(labels)} of {model}; rename them with label names like '0={labels[0]},...'"
        )
