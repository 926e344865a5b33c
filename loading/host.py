"""The host a run happens on: the CPU and versions a result depends on, process start, workers' env.

The evaluation job records `machine_info()` in its reports, replicas report `process_start_time()`
for cold-start breakdowns, and every local Ray this project starts hands `WORKER_ENV` to its workers.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["WORKER_ENV", "machine_info", "process_start_time", "set_worker_env"]

WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",  # artifacts are local; a hub lookup would only add latency or fail
    "TOKENIZERS_PARALLELISM": "false",  # forked workers otherwise warn about the tokenizer pool
    "RAY_AUTH_MODE": "disabled",  # a local, single-user cluster
}


def set_worker_env() -> None:
    """Set `WORKER_ENV` where unset: `ray.init` hands this process's environment to its workers."""
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)


def process_start_time() -> float:
    """Epoch seconds at which this process started, to ~10 ms.

    From /proc (Linux): `psutil.Process().create_time()` adds the start tick to a boot time rounded
    to whole seconds, so it can be off by up to a second, too coarse for a cold-start breakdown.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - started_after_boot)
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().create_time()


MATMUL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_model() -> str:
    """The CPU's model name and its matmul-relevant ISA flags, from /proc/cpuinfo ("unknown" elsewhere).

    A VM often names only the family ("Intel(R) Xeon(R) Processor"); the flags tell the generation.
    """
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    present = [f for f in MATMUL_FLAGS if f in flags]
    return f"{fields.get('model name', 'unknown')} ({' '.join(present) or 'no AVX2'})"


def machine_info() -> dict[str, Any]:
    """Cores, CPU, load (others' jobs skew timings), date and versions, as a JSON-ready dict.

    The CPU matters: fp32 and int8 kernels gain unequally from AVX-512/AMX, so ratios such as
    quant/base requests/s differ between machines of the same core count.
    """
    import ray
    import torch
    import transformers

    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ISA torch's kernels use
        "load_avg_1_5_15m": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "ray": ray.__version__,
        "transformers": transformers.__version__,
    }
