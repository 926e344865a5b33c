"""The CPU as `lscpu` names it, with the flags that decide int8 speed, for a record's "cpu" field.

`loading.host.machine_info` gives the rest (cores, load average, versions); a VM's /proc/cpuinfo
often names only the family, so the flags say which kernels the numbers were measured with.
"""

from __future__ import annotations

import subprocess
from typing import Any

__all__ = ["lscpu"]


def lscpu() -> dict[str, Any]:
    """`lscpu`'s model name and whether the CPU has AVX-512 VNNI (int8 matmuls) and AMX."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {
        "model_name": fields.get("Model name", "unknown").strip(),
        "avx512_vnni": "avx512_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
    }
