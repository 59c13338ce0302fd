"""A role's work folder: intermediate files (a valuator's shards, running sums and factors, a
trainer's checkpoints), each verified before it is reused.

Every file is written atomically and then its SHA-256 beside it, as ``<file>.sha256``. A file
is read back only when its hash matches the recorded one; a file without a record (its write
was cut short), or whose bytes changed since, is reported in one line, removed and computed
again, never reused. The runner names each folder after everything that produced it, so a
file never outlives its inputs. With no folder (``None``), nothing is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dvbench.harness.allocator import large_blocks_mapped
from dvbench.harness.artifacts import read_npz, sha256_file, write_atomic, write_npz, write_text_atomic
from dvbench.harness.executor import Executor, LocalExecutor

T = TypeVar("T")


class WorkFiles:
    """Verified files in one work folder; ``log`` receives the one-line notice of a refused file."""

    def __init__(self, folder: Path | None, log: Callable[[str], None] | None = None):
        self.folder = None if folder is None else Path(folder)
        self.log = log or (lambda line: None)

    def read(self, name: str, reader: Callable[[Path], T]) -> T | None:
        """``reader(path)`` of file ``name`` if it is as written; ``None`` if absent or refused."""
        if self.folder is None or not (self.folder / name).is_file():
            return None
        path, record = self.folder / name, self.folder / f"{name}.sha256"
        recorded = record.read_text(encoding="utf-8").strip() if record.is_file() else None
        if recorded != sha256_file(path):
            why = "has no recorded hash" if recorded is None else "does not match the hash recorded when it was written"
            self.log(f"{path} {why}; computing it again")
            self.remove(name)
            return None
        return reader(path)

    def write(self, name: str, writer: Callable[[Path], None]) -> None:
        """Write file ``name`` atomically with ``writer(tmp)``, then its hash."""
        if self.folder is not None:
            path = self.folder / name
            write_atomic(path, writer)
            write_text_atomic(self.folder / f"{name}.sha256", sha256_file(path) + "\n")

    def remove(self, name: str) -> None:
        if self.folder is not None:
            for path in (self.folder / name, self.folder / f"{name}.sha256"):
                path.unlink(missing_ok=True)


class Shards(WorkFiles):
    """A valuator's intermediate arrays, one verified ``.npz`` file per shard.

    A shard written once is read back, not recomputed: an interrupted run resumes from the
    finished shards, and spec entries that share the work folder share the work.
    """

    def get(self, name: str) -> dict[str, Any] | None:
        """The arrays of shard ``name``, or ``None`` when it was never finished (or was refused)."""
        return self.read(f"{name}.npz", read_npz)

    def put(self, name: str, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Save ``arrays`` as shard ``name`` and return them."""
        self.write(f"{name}.npz", lambda tmp: write_npz(tmp, arrays))
        return dict(arrays)


def shard_blocks(
    shards: Shards, name: str, items: Sequence, compute: Callable[[Sequence], Mapping[str, Any]], *, size: int,
    skipped: Callable[[int], None] | None = None, executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """``compute`` over ``items`` in blocks of ``size``, one shard per block, in order.

    Block ``items[start:start + size]`` is shard ``f"{name}-{start:08d}"``: read back when it
    exists (``skipped(len(block))`` then stands for the progress its computation would have
    made), else ``compute(block)`` runs on ``executor`` (default :class:`LocalExecutor`: in this
    process, in order) and this function writes the shard as each result arrives, so an
    interrupted run keeps every finished block. Returns every block's arrays, in order.
    """
    starts = range(0, len(items), size)
    found = {start: shards.get(_shard(name, start)) for start in starts}
    for start, arrays in found.items():
        if arrays is not None and skipped is not None:
            skipped(len(items[start:start + size]))
    missing = [start for start, arrays in found.items() if arrays is None]
    results = (executor or LocalExecutor()).map(compute, [items[start:start + size] for start in missing])
    for start, arrays in zip(missing, results):
        found[start] = shards.put(_shard(name, start), arrays)
    return [found[start] for start in starts]


def finished(shards: Shards, name: str, count: int, *, size: int) -> bool:
    """Whether :func:`shard_blocks` of ``count`` items in blocks of ``size`` would compute
    nothing: every shard saved. A caller skips what only the missing blocks' units need."""
    return all(shards.get(_shard(name, start)) is not None for start in range(0, count, size))


def _shard(name: str, start: int) -> str:
    return f"{name}-{start:08d}"


BLOCKS = "blocks"  # the running sum's record of how many blocks it holds


def running_sum(
    files: WorkFiles, name: str, items: Sequence, compute: Callable[[Sequence], dict[str, Any]], *, size: int,
    skipped: Callable[[int], None] | None = None, executor: Executor | None = None,
) -> dict[str, Any]:
    """``Σ_k compute(block_k)`` over ``items`` in blocks of ``size``: dicts of CPU torch tensors
    (none named :data:`BLOCKS`), added key by key in block order, on this process.

    The blocks run on ``executor``; each result is added to the sum of the blocks before it as
    it arrives, so the sum is the same bytes wherever and in whatever order the blocks ran. The
    sum through block ``k`` is one verified safetensors file ``name``, replaced after each block
    with ``k`` recorded: an interrupted run resumes after the last block summed
    (``skipped(n)`` stands for the items it holds). Between blocks the sum waits in that file,
    and is added into the next block's result one key at a time as it is read back, so memory
    holds one block's sums and one key of the running one. Without a folder it waits in memory.
    """
    from dvbench.harness.artifacts import read_safetensors

    starts = range(0, len(items), size)
    done = files.read(name, lambda path: int(_tensor(path, BLOCKS))) or 0
    if done and skipped is not None:
        skipped(min(done * size, len(items)))
    if starts and done == len(starts):
        total = files.read(name, read_safetensors)
        total.pop(BLOCKS)
        return total
    held = None  # the running sum, when there is no file to keep it in
    results = (executor or LocalExecutor()).map(compute, [items[start:start + size] for start in starts[done:]])
    count = done
    for partial in results:  # not enumerate(): its reused result tuple would keep the last block's sums
        count += 1
        _summed(files, name, partial, count, held)
        held = partial if files.folder is None or count == len(starts) else None
        del partial  # the next block runs with the sum in its file only
    return held


def _summed(files: WorkFiles, name: str, partial: dict[str, Any], count: int, held: dict[str, Any] | None) -> None:
    """Block ``count``'s ``partial`` made the sum through it (the earlier sum from ``held``, or
    from the file), and that sum saved."""
    import torch

    from dvbench.harness.artifacts import write_safetensors

    with large_blocks_mapped():  # the sums' buffers go back to the system when freed, not to glibc's heap
        if count > 1 and files.folder is None:
            _add(partial, held.__getitem__)
        elif count > 1 and files.read(name, lambda path: _add(partial, lambda key: _tensor(path, key))) is None:
            raise RuntimeError(f"{files.folder / name}: the running sum was lost mid-pass; run the same command "
                               "again")
    files.write(name, lambda tmp: write_safetensors(tmp, {**partial, BLOCKS: torch.tensor(count)}))


def _add(partial: dict[str, Any], earlier: Callable[[str], Any]) -> bool:
    """``partial[key] = partial[key] + earlier(key)`` for every key, one key at a time (addition
    commutes: the same bytes as ``earlier + partial``; out of place, since a result that came
    from another process may be read-only)."""
    for key in partial:
        partial[key] = partial[key] + earlier(key)
    return True


def _tensor(path: Path, key: str):
    """One tensor of a safetensors file, read alone."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(key)
