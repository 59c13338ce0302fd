"""shard_blocks: one shard per block, finished shards read back, missing ones computed by the
executor and written by the loop."""

import numpy as np

from dvbench.harness.work import Shards, shard_blocks
from dvbench.harness.executor import Executor


class Recording(Executor):
    """Runs in process, in order, and records the units it was handed."""

    def __init__(self):
        self.units = []

    def map(self, fn, units):
        for unit in units:
            self.units.append(unit)
            yield fn(unit)


def _square(block):
    return {"values": np.array(block) ** 2}


def test_blocks_are_named_by_start_and_reused(tmp_path):
    shards, items, skipped = Shards(tmp_path), list(range(7)), []
    first = shard_blocks(shards, "part", items, _square, size=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"part-{i:08d}.npz{hashed}" for i in (0, 3, 6)
                                                          for hashed in ("", ".sha256")]
    assert np.concatenate([b["values"] for b in first]).tolist() == [i * i for i in items]

    (tmp_path / "part-00000003.npz").unlink()
    executor = Recording()
    again = shard_blocks(shards, "part", items, _square, size=3, skipped=skipped.append, executor=executor)
    assert executor.units == [[3, 4, 5]]  # only the missing block was computed
    assert skipped == [3, 1]  # the reused blocks' sizes, for progress
    assert all(np.array_equal(a["values"], b["values"]) for a, b in zip(first, again))
    assert (tmp_path / "part-00000003.npz").is_file()  # the loop wrote it back


def test_each_result_is_saved_before_the_next_block_runs(tmp_path):
    seen = []

    def compute(block):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return _square(block)

    shard_blocks(Shards(tmp_path), "part", list(range(4)), compute, size=2)
    assert seen == [[], ["part-00000000.npz", "part-00000000.npz.sha256"]]


def test_without_a_folder_nothing_is_kept(tmp_path):
    blocks = shard_blocks(Shards(None), "part", [1, 2, 3], _square, size=2)
    assert [b["values"].tolist() for b in blocks] == [[1, 4], [9]]


def _sums(block):
    import torch

    values = torch.tensor([float(x) for x in block], dtype=torch.float32)
    return {"total": values.sum(), "squares": values.square().sum().reshape(1)}


def test_a_running_sum_adds_blocks_in_order_and_resumes_after_the_last_saved(tmp_path):
    import torch
    from safetensors import safe_open

    from dvbench.harness.work import BLOCKS, WorkFiles, running_sum

    items = [0.1 * i for i in range(7)]
    expected = {"total": torch.tensor(0.0), "squares": torch.tensor([0.0])}
    for start in (0, 3, 6):  # the blocks' own sums, added in block order
        for key, value in _sums(items[start:start + 3]).items():
            expected[key] = expected[key] + value if start else value
    whole = running_sum(WorkFiles(tmp_path / "whole"), "sums.safetensors", items, _sums, size=3)
    assert all(torch.equal(whole[key], expected[key]) for key in expected)
    assert all(torch.equal(running_sum(WorkFiles(None), "sums", items, _sums, size=3)[key], whole[key])
               for key in whole)  # in memory: the same bytes

    class Cut(Recording):
        def map(self, fn, units):
            for unit in super().map(fn, units):
                yield unit
                if len(self.units) == 2:
                    raise KeyboardInterrupt

    cut = WorkFiles(tmp_path / "cut")
    try:
        running_sum(cut, "sums.safetensors", items, _sums, size=3, executor=Cut())
    except KeyboardInterrupt:
        pass
    with safe_open(str(tmp_path / "cut" / "sums.safetensors"), "pt") as saved:
        assert saved.get_tensor(BLOCKS).item() == 2  # the second block's result was summed and saved
    executor, skipped = Recording(), []
    again = running_sum(cut, "sums.safetensors", items, _sums, size=3, executor=executor, skipped=skipped.append)
    assert executor.units == [[items[6]]] and skipped == [6]
    assert all(torch.equal(again[key], whole[key]) for key in whole)
    done = running_sum(cut, "sums.safetensors", items, _sums, size=3, executor=Recording())
    assert all(torch.equal(done[key], whole[key]) for key in whole)  # all saved: read back
