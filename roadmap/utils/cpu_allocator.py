"""glibc malloc settings for PyTorch on CPU: large blocks served from the heap and kept after they are freed.

By default glibc hands every block above its mmap threshold (128 KiB, rising to at most 32 MiB as blocks are
freed) to a fresh ``mmap`` and returns it on ``free``; the heap's top is trimmed back to the kernel too. A
convolution's output of tens of MiB is then page-faulted in and zeroed on every call: on a 2-core machine a
16×96×56×56 depthwise conv took 18-21 ms instead of 3-5 ms, by the allocator's state rather than the kernel
(docs/measurements.md). PyTorch's CPU tuning guide recommends a caching allocator (jemalloc, tcmalloc); this
is glibc's own equivalent, set in process by ``mallopt``: no mmap threshold (up to 2 GiB) and no trimming,
so freed activations are reused by the next iteration. The cost: the process keeps its peak heap.
"""
from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
_LIMIT = 2**31 - 1  # the largest value mallopt takes (an int)


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the settings once per process; False where the C library is not glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, _LIMIT)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _LIMIT))
    except (OSError, AttributeError):
        return False
