"""Give freed heap memory back to the OS, so an idle replica holds only what it uses.

glibc keeps memory freed by a forward pass (activations, per-call dequantized or decoded weights)
for reuse instead of returning it: a replica then looks 10-30 MB bigger than it is between
batches, which for the smallest variants is more than a quarter of their weight bytes.
`malloc_trim(0)` returns it: ~1-7 ms, under 1% of a 32 x 128 batch on BERT-base (measured in
docs/COMPRESSION.md). Forcing large blocks onto mmap (`MALLOC_MMAP_THRESHOLD_`) does the same at
~10% of every forward's time, since each allocation then faults in fresh pages.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools

__all__ = ["IdleTrim", "trim_heap"]


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)  # glibc only; musl and macOS have none


def trim_heap() -> bool:
    """Return the C heap's free memory to the OS; False where the C library can't (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class IdleTrim:
    """`trim_heap` once the process has been idle `after_s`: call `touch()` after every batch.

    Trimming after each batch costs 2-3% when batches follow each other; after a pause it is free.
    Runs on the caller's event loop.
    """

    def __init__(self, after_s: float = 0.5) -> None:
        self.after_s = after_s
        self._timer: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.after_s, trim_heap)
