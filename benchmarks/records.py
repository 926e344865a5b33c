"""Per-request records of the retrying Locust users (`benchmarks/locust_retry.py --records`).

Each JSON line is one user request: variant, start and end (`t0`, `t1`, epoch s), attempts, the
first attempt's status and error and the final ones (error None when it succeeded), and the replica
that answered. The fault and preemption scripts run that load (`recorded_load`), read the records
while it runs (`RecordTail`) and count windows (`summarize`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness.locust import start_locust, stop_locust

__all__ = ["RecordTail", "error_kind", "in_flight", "percentile", "recorded_load", "summarize"]


class RecordTail:
    """Every complete line of a growing records file, read incrementally while the load runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """All records so far; a line still being written (or torn by a kill) waits for its end."""
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            self.records.extend(json.loads(line) for line in lines if line.strip())
        return self.records


@contextmanager
def recorded_load(
    url: str, variant: str, users: int, seconds: float, records: Path, retry_attempts: int
) -> Iterator[RecordTail]:
    """Retrying Locust users on `variant` for at most `seconds`, each request logged to `records`
    (Locust's output beside it, `.log`); yields the records as they come, stops Locust on exit."""
    options = ["--retry-attempts", str(retry_attempts), "--records", str(records)]
    log = records.with_suffix(".log")
    proc = start_locust(url, variant, users, seconds, log, locustfile="locust_retry.py", options=options)
    try:
        yield RecordTail(records)
    finally:
        stop_locust(proc)


def percentile(values: list[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation between ranks; None for no values."""
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def error_kind(error: str, detail: bool = False) -> str:
    """The kind of a failed attempt without request-specific text: "HTTP 500", "no answer" (with
    `detail`, also what did not answer: "no answer: ConnectionRefusedError")."""
    parts = error.split(":", 2)
    return ":".join(parts[:2]).strip() if detail and error.startswith("no answer") else parts[0][:40]


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
    waited = {f"p{q}_ms": percentile(latencies, q) for q in (50, 95, 99)}
    waited["max_ms"] = max(latencies, default=None)
    return {
        "seconds": round(end - start, 2),
        "requests": len(window),
        "failed_first_attempt": len(first_failed),
        "failed": sum(r["error"] is not None for r in window),
        "retried": sum(r["attempts"] > 1 for r in window),
        "max_attempts": max((r["attempts"] for r in window), default=0),
        "first_attempt_errors": sorted({error_kind(r["first_error"]) for r in first_failed}),
        "ok_per_s": round(sum(r["error"] is None for r in window) / seconds, 2),
        **{k: None if v is None else round(v, 1) for k, v in waited.items()},
    }


def in_flight(records: list[dict[str, Any]], at: float) -> list[dict[str, Any]]:
    """Requests sent before `at` and answered after it."""
    return [r for r in records if r["t0"] <= at < r["t1"]]
