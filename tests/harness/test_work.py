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
