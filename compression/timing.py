"""The one timer the compression benchmarks and the int8 probe share: fastest of a few calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["best_ms"]


def best_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of `repeats` timed calls after a warm-up: on a shared machine, the least disturbed one."""
    fn()  # warm-up: allocator, lazy init, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)
