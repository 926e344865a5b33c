"""Per-request records of the retrying Locust users (`benchmarks/locust_retry.py --records`).

Each JSON line is one request: start and end (`t0`, `t1`, epoch s), attempts, the first attempt's
error and the final one (None when it succeeded), and the replica that answered. The fault and
preemption scripts read them while the load runs (`RecordTail`) and count windows (`summarize`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RecordTail", "error_kind", "in_flight", "load_records", "percentile", "summarize"]


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record in the file; a torn last line (the client stopped mid-write) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class RecordTail:
    """Every complete line of a growing records file, read incrementally while the load runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """All records so far (new complete lines appended to `records`)."""
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            self.records.extend(json.loads(line) for line in lines if line.strip())
        return self.records


def percentile(values: list[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation between ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def error_kind(error: str) -> str:
    """The kind of a failed attempt ("HTTP 500", "no answer"), without request-specific text."""
    return error.split(":", 1)[0][:40]


def summarize(records: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Requests answered (or given up on) in [start, end), by end time, so a request cut off by a
    fault counts in the window after it.

    failed_first_attempt: what a client without retries would have seen; failed: what users saw
    after the retry policy; latencies (ms) are what users waited, retries included.
    """
    window = [r for r in records if start <= r["t1"] < end]
    latencies = [(r["t1"] - r["t0"]) * 1e3 for r in window]
    first_failed = [r for r in window if r["first_error"] is not None]
    seconds = max(end - start, 1e-9)
    return {
        "seconds": round(end - start, 2),
        "requests": len(window),
        "failed_first_attempt": len(first_failed),
        "failed": sum(r["error"] is not None for r in window),
        "retried": sum(r["attempts"] > 1 for r in window),
        "max_attempts": max((r["attempts"] for r in window), default=0),
        "first_attempt_errors": sorted({error_kind(r["first_error"]) for r in first_failed}),
        "ok_per_s": round(sum(r["error"] is None for r in window) / seconds, 2),
        **{f"p{q}_ms": _round(percentile(latencies, q)) for q in (50, 95, 99)},
        "max_ms": _round(max(latencies, default=None)),
    }


def in_flight(records: list[dict[str, Any]], at: float) -> list[dict[str, Any]]:
    """Requests sent before `at` and answered after it."""
    return [r for r in records if r["t0"] <= at < r["t1"]]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
