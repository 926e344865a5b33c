"""Give freed heap memory back to the OS, so an idle replica holds only what it uses.

glibc keeps memory freed by a forward pass (activations, per-call dequantized or decoded weights)
for reuse instead of returning it: a replica then looks 10-30 MB bigger than it is between
batches, which for the smallest variants is more than a quarter of their weight bytes.
`malloc_trim(0)` returns it: ~1-7 ms, under 1% of a 32 x 128 batch on BERT-base (measured in
docs/COMPRESSION.md). Forcing large blocks onto mmap (`MALLOC_MMAP_THRESHOLD_`) does the same at
~10% of every forward's time, since each allocation then faults in fresh pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["trim_heap"]


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
