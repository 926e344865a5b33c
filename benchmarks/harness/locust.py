"""Headless Locust as a subprocess: one launcher for every load test, its stats, and a clean stop.

Locust runs in its own process (gevent must not patch the measuring script), sending single texts
(`--batch-share 0`, so requests/s = texts/s) from `benchmarks/locustfile.py` or its retrying users
(`locustfile="locust_retry.py"`).
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT

__all__ = ["locust_command", "read_stats", "run_locust", "start_locust", "stop_locust"]


def locust_command(
    url: str,
    variant: str,
    users: int,
    seconds: float,
    *,
    locustfile: str = "locustfile.py",
    options: Sequence[str] = (),
) -> list[str]:
    """`users` closed-loop users, all started at once, posting single texts to `variant` for `seconds`."""
    return [
        *(sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / locustfile), "--headless"),
        *("-u", str(users), "-r", str(users), "-t", f"{seconds:.0f}s", "--host", url),
        *("--variants", variant, "--batch-share", "0", "--only-summary", "--loglevel", "WARNING"),
        *options,
    ]


def start_locust(
    url: str, variant: str, users: int, seconds: float, log: Path, **command: Any
) -> subprocess.Popen:
    """Locust in the background (own process group), its output in `log`; stop it with `stop_locust`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            locust_command(url, variant, users, seconds, **command),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def read_stats(prefix: Path, log: Path | None = None) -> dict[str, Any]:
    """The aggregated row of Locust's `--csv prefix` stats: requests, failures, requests/s, p50/95/99."""
    path = Path(f"{prefix}_stats.csv")
    if not path.exists():
        tail = log.read_text()[-2000:] if log and log.exists() else ""
        raise RuntimeError(f"locust wrote no stats at {path}: {tail}")
    with path.open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "requests_per_s": float(row["Requests/s"]),
        # Locust writes N/A when no request finished in the run (a variant far too slow): NaN, not a crash.
        **{f"p{q}_ms": float("nan") if row[f"{q}%"] == "N/A" else float(row[f"{q}%"]) for q in (50, 95, 99)},
    }


def run_locust(url: str, variant: str, users: int, seconds: float, folder: Path) -> dict[str, Any]:
    """One headless Locust run of single texts at `users` closed-loop users; its aggregated stats."""
    prefix = folder / f"{variant}-{users}"
    log = Path(f"{prefix}.log")
    proc = start_locust(url, variant, users, seconds, log, options=["--csv", str(prefix), "--reset-stats"])
    try:
        proc.wait(timeout=seconds + 120)
    finally:
        stop_locust(proc)
    return {"users": users, **read_stats(prefix, log)}


def stop_locust(proc: subprocess.Popen) -> None:
    """SIGTERM (Locust stops its users and exits), SIGKILL if it does not within 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
