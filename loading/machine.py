"""What machine and library versions a benchmark ran on, recorded with every result."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["machine_info"]


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
