"""Shard files of an evaluation job: which rows each holds, writing them atomically, reading them back.

A variant's predictions live in `DIR/predictions/<variant>/` as one Parquet file per shard plus
`job.json`, the fingerprint of everything that decides the numbers (rows, model weights, batching,
kernels). A shard file exists only once complete (temp file + rename), so a re-run trusts every file
it finds and computes only the missing ones; a fingerprint mismatch stops the re-run instead of
mixing two jobs' predictions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evaluation.metrics import PROB_PREFIX
from training.data import LabelledTable

__all__ = [
    "Shard",
    "data_fingerprint",
    "plan_shards",
    "prepare_variant_dir",
    "read_predictions",
    "shard_is_complete",
    "write_shard",
]

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "job.json"


@dataclass(frozen=True)
class Shard:
    """Rows `start:stop` of the evaluated table (positions, not file rows)."""

    index: int
    start: int
    stop: int
    count: int  # shards in the plan, for the file name

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def path(self, folder: Path) -> Path:
        return folder / f"shard-{self.index:05d}-of-{self.count:05d}.parquet"


def plan_shards(rows: int, shard_rows: int) -> list[Shard]:
    """Contiguous shards of `shard_rows` rows (the last may be shorter); independent of worker count."""
    if rows < 1 or shard_rows < 1:
        raise ValueError(f"rows and shard_rows must be >= 1, got {rows} and {shard_rows}")
    starts = range(0, rows, shard_rows)
    return [Shard(i, s, min(s + shard_rows, rows), len(starts)) for i, s in enumerate(starts)]


def data_fingerprint(table: LabelledTable) -> str:
    """SHA-256 of the rows (file row, label, text) in order: same digest, same evaluated set."""
    digest = hashlib.sha256()
    for row, label, text in zip(table.rows, table.labels, table.texts, strict=True):
        digest.update(f"{row}\x1f{label}\x1f{text}\x1e".encode())
    return f"sha256:{digest.hexdigest()}"


def prepare_variant_dir(folder: Path, fingerprint: dict[str, Any]) -> None:
    """Create `folder` for a job with `fingerprint`, or check that the job already there is the same one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FINGERPRINT_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
        if changed:
            raise ValueError(
                f"{folder} must hold predictions of this same job to resume it, got one that differs in "
                f"{changed}; use another --out or delete that folder"
            )
        return
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(fingerprint, indent=2, sort_keys=True)))


def write_shard(
    path: Path,
    start: int,
    rows: Sequence[int],
    labels: Sequence[str],
    predicted: Sequence[str],
    probabilities: Sequence[Sequence[float]],
    label_names: Sequence[str],
    truncated: Sequence[bool],
) -> None:
    """One shard's predictions as Parquet, written to a temp file and renamed into place."""
    columns: dict[str, Any] = {
        "index": pa.array(range(start, start + len(rows)), pa.int64()),  # position in the evaluated table
        "row": pa.array(rows, pa.int64()),  # 1-based row in the data file
        "label": pa.array(labels, pa.string()),
        "predicted": pa.array(predicted, pa.string()),
        "truncated": pa.array(truncated, pa.bool_()),
    }
    for k, name in enumerate(label_names):
        columns[f"{PROB_PREFIX}{name}"] = pa.array([p[k] for p in probabilities], pa.float32())
    table = pa.table(columns)
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def shard_is_complete(path: Path, shard_start: int, shard_rows: int) -> bool:
    """True if `path` is a readable shard file holding exactly the expected rows."""
    if not path.exists():
        return False
    try:
        index = pq.read_table(path, columns=["index"]).column("index").to_pylist()
    except (OSError, pa.ArrowException) as exc:
        logger.warning("%s is unreadable (%s); computing it again", path, exc)
        return False
    if index != list(range(shard_start, shard_start + shard_rows)):
        logger.warning("%s holds other rows than its shard; computing it again", path)
        return False
    return True


def read_predictions(folder: Path) -> pd.DataFrame:
    """Every shard of one variant, in row order."""
    paths = sorted(folder.glob("shard-*.parquet"))
    if not paths:
        raise ValueError(f"{folder} must hold shard files, got none")
    frame = pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)
    return frame.sort_values("index", kind="stable").reset_index(drop=True)


def _atomic_write(path: Path, write: Any) -> None:
    """Run `write(tmp_path)` on a temp file beside `path`, then rename it to `path` (atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
