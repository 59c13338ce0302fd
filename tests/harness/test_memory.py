"""PeakMemory against allocations of known size."""

import sys
from types import SimpleNamespace

import numpy as np

from dvbench.harness import memory
from dvbench.harness.memory import MIB, PeakMemory, rss_bytes


def test_memory_held_at_the_end_of_the_block_is_in_its_peak():
    before = rss_bytes()
    with PeakMemory() as peak:
        block = np.ones(64 * MIB // 8)  # 64 MiB, written, so resident
    assert peak.rss_mb >= (before + block.nbytes) / MIB - 1
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        assert peak.cuda_allocated_mb is None


def test_a_new_process_maximum_during_the_block_is_its_peak(monkeypatch):
    """A peak between two samples: when ru_maxrss rose during the block, its new value was
    reached in the block; when it did not, it says nothing about the block and the samples count.
    (Stand-ins for the kernel's counters: a child process inherits its parent's ru_maxrss, so a
    real one cannot be made to rise by a small allocation.)"""
    monkeypatch.setattr(memory, "INTERVAL", 3600)  # no sample between the first and the last
    monkeypatch.setattr(memory, "rss_bytes", lambda: 300 * MIB)
    for before, after, expected in ((500, 900, 900.0), (900, 900, 300.0)):
        counters = iter([before * MIB, after * MIB])
        monkeypatch.setattr(memory, "_maxrss_bytes", lambda: next(counters))
        with PeakMemory() as peak:
            pass
        assert peak.rss_mb == expected


def test_cuda_peak_is_reset_at_the_start_and_read_at_the_end(monkeypatch):
    """torch.cuda's calls, as on a GPU (a stand-in module: the suite runs on CPU)."""
    calls = []
    cuda = SimpleNamespace(is_initialized=lambda: True, reset_peak_memory_stats=lambda: calls.append("reset"),
                           max_memory_allocated=lambda: calls.append("read") or 3 * MIB + MIB // 2)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    with PeakMemory() as peak:
        calls.append("work")
    assert calls == ["reset", "work", "read"] and peak.cuda_allocated_mb == 3.5
