"""Tests of the measurement scripts; `run_record` runs one the way the docs do."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks.harness import ROOT


def run_record(module: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """`python -m <module> --json <args>` from the checkout; its record (the last stdout line)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
