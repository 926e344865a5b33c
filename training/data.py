"""Labelled text tables from CSV, Parquet or JSON-lines files, with errors that name the bad rows.

Training and evaluation both read their data here (the named sets, PANDORA's pair of files and the
offline ones shipped in pip packages, are in `training.sources`), so a file that trains also
evaluates and a mistake in it is reported the same way. Rows are numbered from 1 for the first
record after any header line. Empty texts are skipped with a warning and counted, never dropped
silently; every other problem (missing labels, non-text values, missing columns) stops the load,
because guessing would train on data the user did not mean.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow

__all__ = [
    "DataError",
    "LabelledTable",
    "load_table",
    "parse_label_names",
    "read_frame",
    "require_columns",
    "stratified_order",
    "table_from_frame",
]

logger = logging.getLogger(__name__)

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")  # what pandas infers from the suffix
_SHOWN_ROWS = 10  # row numbers quoted in a message; the count is always complete
# What the readers raise for a damaged or mis-suffixed file (UnicodeDecodeError and pandas'
# parser errors are ValueErrors; bad gzip/bz2 streams are OSError, EOFError or zlib.error).
_READ_ERRORS = (ValueError, OSError, EOFError, zlib.error, pyarrow.ArrowException)


class DataError(ValueError):
    """A data file is missing, unreadable or does not hold a usable labelled text table."""


@dataclass(frozen=True)
class LabelledTable:
    """Texts and their label names, in file order, with what was skipped on the way."""

    path: Path
    texts: list[str]
    labels: list[str]  # one label name per text, after any renaming
    label_names: tuple[str, ...]  # distinct labels present, sorted by their raw value
    rows: list[int] = field(default_factory=list)  # 1-based file row of each kept text
    skipped_rows: int = 0  # rows with empty or missing text, reported and left out
    # Who wrote each text (PANDORA's authors), or empty: rows of one group must stay in one split,
    # else a model tested on its training authors' other comments scores their style, not the label.
    groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert len(self.texts) == len(self.labels) == len(self.rows), "columns must align"
        assert len(self.groups) in (0, len(self.texts)), "groups must be absent or one per text"

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: Sequence[int]) -> LabelledTable:
        """The rows at `indices` (in that order); `label_names` keeps only labels still present."""
        labels = [self.labels[i] for i in indices]
        present = set(labels)
        return LabelledTable(
            path=self.path,
            texts=[self.texts[i] for i in indices],
            labels=labels,
            label_names=tuple(name for name in self.label_names if name in present),
            rows=[self.rows[i] for i in indices],
            skipped_rows=self.skipped_rows,
            groups=[self.groups[i] for i in indices] if self.groups else [],
        )


def _format_of(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in _COMPRESSIONS
    if compressed:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (compressed and fmt == "parquet"):
        known = ", ".join(_FORMATS) + f" (csv and json also with {', '.join(_COMPRESSIONS)})"
        raise DataError(f"{path}: unknown file type {''.join(path.suffixes) or '(none)'}; expected {known}")
    return fmt, compressed


def _read_frame(path: Path, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            # CSV has no types: read every cell as text, and only empty cells as missing ("NA" or
            # "None" may be a real text or label).
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if fmt == "parquet":
            return pd.read_parquet(path)
        # dtype/convert_dates off: keep the JSON values as written, no guessing of numbers or dates.
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    except _READ_ERRORS as exc:
        what = "JSON lines (one object per line)" if fmt == "jsonl" else fmt.upper()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot parse as {what}: {reason}") from exc


def _is_missing(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    missing = pd.isna(value)  # an array for list values, which are not missing
    return isinstance(missing, bool | np.bool_) and bool(missing)


def _label_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():  # 1.0 from Parquet/JSON means label "1"
        value = int(value)
    return str(value).strip()


def _label_sort_key(name: str) -> tuple[int, float, str]:
    try:  # numeric labels in numeric order, so "2" comes before "10"
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:_SHOWN_ROWS]))
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''} ({shown}{more})"


def _renamer(raw_names: list[str], label_names: Mapping[str, str] | None, path: Path) -> dict[str, str]:
    if not label_names:
        return {name: name for name in raw_names}
    unnamed = [name for name in raw_names if name not in label_names]
    if unnamed:
        raise DataError(
            f"{path}: label_names has no entry for labels {unnamed}; it maps {sorted(label_names)}"
        )
    renamed = {name: str(label_names[name]) for name in raw_names}
    if len(set(renamed.values())) != len(renamed):
        raise DataError(f"{path}: label_names maps distinct labels to the same name: {renamed}")
    return renamed


def load_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Mapping[str, str] | None = None,
) -> LabelledTable:
    """Read a labelled text table; the format comes from the suffix.

    Args:
        path: a .csv, .parquet, .jsonl or .json (JSON lines) file; csv/json may end in .gz, .bz2, ...
        text_column: column holding the texts.
        label_column: column holding the labels; any values, compared as strings.
        label_names: optional renaming of raw labels, e.g. {"0": "not_stress", "1": "stress"}.
            Every label in the file needs an entry; unused entries are ignored.
    """
    path = Path(path)
    return table_from_frame(read_frame(path), path, text_column, label_column, label_names)


def read_frame(path: str | Path) -> pd.DataFrame:
    """A data file as a DataFrame (format from the suffix); DataError names the file and problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: is not a file")
    fmt, _ = _format_of(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return _read_frame(path, fmt)


def require_columns(frame: pd.DataFrame, path: Path, columns: Sequence[str]) -> None:
    """DataError naming the missing columns of `frame` (read from `path`), if any."""
    missing_columns = [c for c in columns if c not in frame.columns]
    if missing_columns:
        raise DataError(
            f"{path}: no column {', '.join(map(repr, missing_columns))}; "
            f"columns are {[str(c) for c in frame.columns]}"
        )


def table_from_frame(
    frame: pd.DataFrame,
    path: Path,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Mapping[str, str] | None = None,
    row_numbers: Sequence[int] | None = None,
) -> LabelledTable:
    """Check and convert a frame read from `path` (see `load_table`).

    `row_numbers`: the 1-based file row of each frame row, when the frame is not the file itself
    (e.g. a join); default: frame order.
    """
    require_columns(frame, path, (text_column, label_column))
    if len(frame) == 0:
        raise DataError(f"{path}: file has no data rows")
    file_rows = list(row_numbers) if row_numbers is not None else list(range(1, len(frame) + 1))

    raw_texts = frame[text_column].tolist()
    raw_labels = frame[label_column].tolist()
    non_text = [
        file_rows[i] for i, t in enumerate(raw_texts) if not isinstance(t, str) and not _is_missing(t)
    ]
    if non_text:
        example = raw_texts[file_rows.index(non_text[0])]
        raise DataError(
            f"{path}: column {text_column!r} has non-text values in {_rows_text(non_text)}, "
            f"e.g. {example!r} ({type(example).__name__})"
        )
    unlabelled = [file_rows[i] for i, lab in enumerate(raw_labels) if _is_missing(lab)]
    if unlabelled:
        raise DataError(f"{path}: column {label_column!r} has no label in {_rows_text(unlabelled)}")
    empty = [file_rows[i] for i, t in enumerate(raw_texts) if _is_missing(t)]
    if empty:
        logger.warning("%s: skipped %s with empty text", path, _rows_text(empty))
    kept = [i for i, t in enumerate(raw_texts) if not _is_missing(t)]
    if not kept:
        raise DataError(f"{path}: every row has an empty {text_column!r}")

    labels = [_label_str(raw_labels[i]) for i in kept]
    raw_names = sorted(set(labels), key=_label_sort_key)
    rename = _renamer(raw_names, label_names, path)
    return LabelledTable(
        path=path,
        texts=[raw_texts[i] for i in kept],
        labels=[rename[lab] for lab in labels],
        label_names=tuple(rename[name] for name in raw_names),
        rows=[file_rows[i] for i in kept],
        skipped_rows=len(empty),
    )


def parse_label_names(spec: str) -> dict[str, str]:
    """`"0=not_stress,1=stress"` -> `{"0": "not_stress", "1": "stress"}` (the CLI's form)."""
    names: dict[str, str] = {}
    for item in spec.split(","):
        raw, sep, name = (part.strip() for part in item.partition("="))
        if not sep or not raw or not name:
            raise DataError(f"label names must look like '0=negative,1=positive', got {spec!r}")
        if raw in names:
            raise DataError(f"label names must name each label once, got {raw!r} twice in {spec!r}")
        names[raw] = name
    return names


def stratified_order(labels: Sequence[str], seed: int) -> list[int]:
    """A seeded permutation of row indices whose every prefix keeps the label shares.

    Taking the first n rows gives a stratified sample of n; splitting the order gives a stratified
    split. Each row's key is its (shuffled) rank within its label over the label's count, so rare
    labels are spread evenly instead of landing all at the start or the end.
    """
    shuffled = np.random.default_rng(seed).permutation(len(labels)).tolist()
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    seen: dict[str, int] = {}
    keys = {}
    for i in shuffled:
        rank = seen.get(labels[i], 0)
        seen[labels[i]] = rank + 1
        keys[i] = (rank + 0.5) / counts[labels[i]]
    return sorted(shuffled, key=keys.__getitem__)  # stable: ties keep the shuffled order
