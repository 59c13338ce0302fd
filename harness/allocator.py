"""glibc's malloc set for a backward: while :func:`large_blocks_mapped` is active, every block of
:data:`MMAP_THRESHOLD` bytes or more gets its own mapping, handed back to the system when freed.

By default glibc raises its mmap threshold each time such a block is freed (up to
:data:`DYNAMIC_MAX`), after which tensor buffers of up to that size come from its heaps, where
freed space stays with the process and fragments across threads. On the embedded model, one
backward of 8 real rows (4,040 padded tokens) then peaked at 2.96 GiB where, with the threshold
fixed at 1 MiB, it peaked at 1.44 GiB. Mapping every large block costs page faults, though: ICP
(no backward) ran 28% slower with the threshold fixed for the whole process (42.3 s against 33.0
s, 2 × 32 real pairs), so it is fixed only around the gradient paths' forward and backward and
set to :data:`DYNAMIC_MAX`, where glibc's own rule ends up, afterwards. Elsewhere than glibc
this does nothing.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)
MMAP_THRESHOLD = 1 << 20  # bytes
DYNAMIC_MAX = 32 << 20  # glibc's largest dynamic threshold on 64-bit machines


def _set(threshold: int) -> None:
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)


@contextmanager
def large_blocks_mapped():
    """glibc's mmap threshold at :data:`MMAP_THRESHOLD` inside, :data:`DYNAMIC_MAX` after."""
    _set(MMAP_THRESHOLD)
    try:
        yield
    finally:
        _set(DYNAMIC_MAX)
