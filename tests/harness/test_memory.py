"""PeakMemory against allocations of known size."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

from dvbench.harness.memory import MIB, PeakMemory, rss_bytes


def test_memory_held_at_the_end_of_the_block_is_in_its_peak():
    before = rss_bytes()
    with PeakMemory() as peak:
        block = np.ones(64 * MIB // 8)  # 64 MiB, written, so resident
    assert peak.rss_mb >= (before + block.nbytes) / MIB - 1
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        assert peak.cuda_allocated_mb is None


def test_a_peak_released_inside_the_block_is_caught():
    """In a fresh process (whose highest RSS so far is far below the block's), 256 MiB held and
    freed between two samples is still the peak; the RSS afterwards is not."""
    code = ("import json, numpy as np\n"
            "from dvbench.harness import memory\n"
            "memory.INTERVAL = 3600  # no sample between the first and the last\n"
            "with memory.PeakMemory() as peak:\n"
            "    block = np.ones(256 * memory.MIB // 8); del block\n"
            "print(json.dumps([peak.rss_mb, memory.rss_bytes() / memory.MIB]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, after = json.loads(done.stdout)
    assert peak >= 256 and after < peak - 200


def test_cuda_peak_is_reset_at_the_start_and_read_at_the_end(monkeypatch):
    """torch.cuda's calls, as on a GPU (a stand-in module: the suite runs on CPU)."""
    calls = []
    cuda = SimpleNamespace(is_initialized=lambda: True, reset_peak_memory_stats=lambda: calls.append("reset"),
                           max_memory_allocated=lambda: calls.append("read") or 3 * MIB + MIB // 2)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    with PeakMemory() as peak:
        calls.append("work")
    assert calls == ["reset", "work", "read"] and peak.cuda_allocated_mb == 3.5
