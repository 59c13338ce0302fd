"""Peak memory of this process over one block of work (each valuator's share of the run's cost).

``peak_rss_mb``: the largest resident set size (MiB) seen while the block ran, read from
``/proc/self/statm`` at its start, at its end and every :data:`INTERVAL` seconds between by a
background thread. A peak between two samples is still caught when it is the process's highest so
far: the kernel's ``ru_maxrss`` then rose during the block, and its new value is that peak (a
process starts with its parent's ``ru_maxrss``, so "so far" includes the parent's). Where there
is no ``/proc`` (macOS) only such a rise is known; otherwise the peak is ``None``.

``peak_cuda_allocated_mb``: ``torch.cuda.max_memory_allocated()`` of the current device (MiB),
reset when the block starts; ``None`` when CUDA was not initialised (no model on a GPU). Memory
that other processes or CUDA itself hold (the context, the caching allocator's reserve) is not in it.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path

INTERVAL = 0.05  # seconds between samples
MIB = 2 ** 20
STATM = Path("/proc/self/statm")


def rss_bytes() -> int | None:
    """This process's resident set size now, or ``None`` without ``/proc``."""
    try:
        return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def _maxrss_bytes() -> int:
    """The process's highest resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _cuda():
    """torch's CUDA module when this process initialised CUDA, else ``None`` (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_initialized() else None


class PeakMemory:
    """``with PeakMemory() as peak: ...``, then ``peak.rss_mb`` and ``peak.cuda_allocated_mb``."""

    def __init__(self) -> None:
        self.rss_mb: float | None = None
        self.cuda_allocated_mb: float | None = None
        self._peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="dvbench-peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        if (cuda := _cuda()) is not None:
            cuda.reset_peak_memory_stats()
        self._maxrss = _maxrss_bytes()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        maxrss = _maxrss_bytes()
        if maxrss > self._maxrss:
            self._peak = max(self._peak or 0, maxrss)
        self.rss_mb = None if self._peak is None else round(self._peak / MIB, 1)
        if (cuda := _cuda()) is not None:  # initialised before or during the block: its peak is this block's
            self.cuda_allocated_mb = round(cuda.max_memory_allocated() / MIB, 1)

    def _sample(self) -> None:
        rss = rss_bytes()
        if rss is not None:
            self._peak = max(self._peak or 0, rss)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._sample()
