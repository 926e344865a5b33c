"""What every benchmark runs under: its environment variables, and the machine facts it records."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["BENCH_ENV", "machine_info", "set_bench_env"]

BENCH_ENV = {
    "HF_HUB_OFFLINE": "1",  # artifacts are local; a hub lookup would only add latency or fail
    "TOKENIZERS_PARALLELISM": "false",  # forked workers otherwise warn about the tokenizer pool
    "RAY_AUTH_MODE": "disabled",  # a local, single-user cluster
}


def set_bench_env() -> None:
    """Set `BENCH_ENV` where unset: `ray.init` hands this process's environment to its workers."""
    for key, value in BENCH_ENV.items():
        os.environ.setdefault(key, value)


def machine_info() -> dict[str, Any]:
    """Cores, load (others' jobs skew timings), date and versions, as a JSON-ready dict."""
    import ray
    import torch
    import transformers

    return {
        "cores": os.cpu_count(),
        "load_avg_1_5_15m": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "ray": ray.__version__,
        "transformers": transformers.__version__,
    }
