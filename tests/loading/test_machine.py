"""Machine facts used by the benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time

from loading.machine import process_start_time


def test_process_start_time_is_when_the_process_started():
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "from loading.machine import process_start_time; print(process_start_time())"],
        capture_output=True,
        text=True,
        check=True,
    )
    started = float(out.stdout)
    assert before - 0.05 <= started <= time.time()
    assert started - before < 1.0  # the child started right away, not a boot-time rounding later
    assert process_start_time() < before
