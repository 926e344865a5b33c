"""The labelled sets an evaluation runs on: the offline default, any table file, or PANDORA.

Reading and checking one table is `training.data`'s job (the same rules for fine-tuning and
evaluating: missing columns, empty files, missing labels and non-text values stop the load and name
file and rows; empty texts are reported and skipped). This module adds what only evaluation needs:
PANDORA's two-file layout, balanced sampling, and refusing labels the model cannot predict before
any worker starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.data import (
    DREADDIT_LABEL_NAMES,
    DataError,
    LabelledTable,
    dreaddit_paths,
    load_table,
    parse_label_names,
    read_frame,
    require_columns,
    stratified_order,
)

__all__ = [
    "DataError",
    "DataSpec",
    "PANDORA_GENDERS",
    "balanced_sample",
    "check_labels",
    "load_eval_data",
    "load_pandora",
    "model_labels",
]

logger = logging.getLogger(__name__)

PANDORA_GENDERS = ("m", "f")  # the self-reported genders PANDORA's author profiles use


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


def load_pandora(
    comments: str | Path,
    profiles: str | Path,
    *,
    text_column: str = "body",
    author_column: str = "author",
    gender_column: str = "gender",
    label_names: dict[str, str] | None = None,
) -> LabelledTable:
    """PANDORA as its authors ship it: comments (author, body) joined to profiles (author, gender).

    Only authors whose profile gives gender m or f are kept; the label is that gender ("m"/"f",
    renamed by `label_names`, e.g. {"m": "male", "f": "female"}). Row numbers in errors and in the
    result refer to the comments file.
    """
    comments, profiles = Path(comments), Path(profiles)
    # The comments go through training.data's checks with the author as the "label": every comment
    # needs one, and empty bodies are reported and skipped.
    posts = load_table(comments, text_column, author_column)
    people = read_frame(profiles)
    require_columns(people, profiles, (author_column, gender_column))
    gender_of: dict[str, str] = {}
    pairs = zip(people[author_column], people[gender_column], strict=True)
    for row, (author, gender) in enumerate(pairs, start=1):
        gender = gender.strip().lower() if isinstance(gender, str) else None
        if gender not in PANDORA_GENDERS:
            continue  # no self-reported m/f: the author is left out
        author = "" if pd.isna(author) else str(author).strip()  # compared as text, as in the comments
        if not author:
            raise DataError(
                f"{profiles}: row {row}: gender {gender!r} without an author in {author_column!r}"
            )
        if gender_of.setdefault(author, gender) != gender:
            raise DataError(
                f"{profiles}: row {row}: author {author!r} has genders {gender_of[author]!r} and {gender!r}"
            )
    if not gender_of:
        raise DataError(
            f"{profiles}: no author has gender {' or '.join(PANDORA_GENDERS)} in {gender_column!r}"
        )
    kept = [i for i, author in enumerate(posts.labels) if author in gender_of]
    if not kept:
        raise DataError(f"{comments}: no comment's author has gender m or f in {profiles}")
    logger.info(
        "PANDORA: kept %d of %d comments, by the %d of %d profiled authors with gender m/f",
        len(kept),
        len(posts),
        len({posts.labels[i] for i in kept}),
        people[author_column].nunique(),
    )
    raw = [gender_of[posts.labels[i]] for i in kept]
    present = [g for g in PANDORA_GENDERS if g in set(raw)]
    if label_names is not None:
        unnamed = [g for g in present if g not in label_names]
        if unnamed:
            raise DataError(
                f"{profiles}: label names have no entry for genders {unnamed}; give e.g. 'm=male,f=female'"
            )
    rename = {g: (label_names or {}).get(g, g) for g in present}
    return LabelledTable(
        path=comments,
        texts=[posts.texts[i] for i in kept],
        labels=[rename[g] for g in raw],
        label_names=tuple(rename[g] for g in present),
        rows=[posts.rows[i] for i in kept],
        skipped_rows=posts.skipped_rows,
    )


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
