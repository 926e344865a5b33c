"""Machine facts used by the benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time

from loading.host import process_start_time


def test_process_start_time_is_when_the_process_started():
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "from loading.host import process_start_time; print(process_start_time())"],
        capture_output=True,
        text=True,
        check=True,
    )
    started = float(out.stdout)
    assert before - 0.05 <= started <= time.time()
    assert started - before < 1.0  # the child started right away, not a boot-time rounding later
    assert process_start_time() < before


def test_machine_info_names_the_cpu_and_its_matmul_flags():
    """Ratios such as quant/base depend on the CPU's ISA; the record must say which CPU it was."""
    from pathlib import Path

    from loading.host import MATMUL_FLAGS, machine_info

    info = machine_info()
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    expected = [f for f in MATMUL_FLAGS if f in flags]
    assert info["cpu"].endswith(f"({' '.join(expected) or 'no AVX2'})")
    assert isinstance(info["cpu_capability"], str) and info["cpu_capability"]  # e.g. "AVX512"
