"""glibc's malloc set for tensors: every block of :data:`MMAP_THRESHOLD` bytes or more gets its
own mapping, handed back to the system when freed.

By default glibc raises its mmap threshold each time such a block is freed (up to 32 MiB), after
which tensor buffers of up to that size come from its heaps, where freed space stays with the
process and fragments across threads. On the embedded model, one backward of 8 real rows (4,040
padded tokens) then peaked at 2.96 GiB where, with the threshold fixed, it peaked at 1.44 GiB.
A fixed threshold also stops the raising. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)
MMAP_THRESHOLD = 1 << 20  # bytes


def map_large_blocks() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`, for this process, from now on."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
