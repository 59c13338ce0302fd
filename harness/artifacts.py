"""Artifacts on disk, each written atomically beside a record of what produced it.

An artifact is one or more files plus ``<name>.json``: the producer (plugin, version, config,
data fingerprints, seed) and each file's SHA-256. :meth:`ArtifactStore.find` returns the files
only when the record exists, names the same producer and every hash matches; anything else
(a different config, a half-written file) is recomputed, never reused.

:class:`Shards` keeps a valuator's intermediate arrays; :func:`shard_blocks` is the loop that
fills them block by block, handing the missing blocks to an executor.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from dvbench.harness import __version__
from dvbench.harness.executor import Executor, LocalExecutor
from dvbench.harness.records import Example


def canonical(data: Any) -> str:
    """JSON with sorted keys: equal data, equal text."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot record {type(value).__name__} in an artifact's provenance")


def fingerprint(examples: Iterable[Example]) -> str:
    """SHA-256 of the examples' ids, texts and subsets, in order."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(canonical([e.id, e.instruction, e.input, e.output, e.subset]).encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class ArtifactStore:
    """Artifacts under one output folder, keyed by relative name (``scores/icp``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str, suffix: str) -> Path:
        path = (self.root / f"{name}{suffix}").resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact {name!r} would lie outside {self.root}")
        return path

    def find(self, name: str, producer: Mapping[str, Any]) -> tuple[dict[str, Path] | None, str]:
        """The artifact's files if it was produced by ``producer`` and is whole; else why not."""
        record_path = self.path(name, ".json")
        if not record_path.exists():
            return None, "not computed yet"
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, f"{record_path} is unreadable"
        if canonical(record.get("producer")) != canonical(producer):
            return None, f"produced under other settings ({_difference(record.get('producer'), producer)})"
        files = {}
        for suffix, digest in record.get("files", {}).items():
            path = self.path(name, suffix)
            if not path.exists() or sha256_file(path) != digest:
                return None, f"{path.name} is missing or changed since it was written"
            files[suffix] = path
        return files, "up to date"

    def save(self, name: str, producer: Mapping[str, Any], writers: Mapping[str, Callable[[Path], None]]) -> None:
        """Write each ``suffix -> writer`` file atomically, then the record that vouches for them."""
        record_path = self.path(name, ".json")
        record_path.unlink(missing_ok=True)  # no stale record may vouch for new files
        hashes = {}
        for suffix, write in writers.items():
            path = self.path(name, suffix)
            write_atomic(path, write)
            hashes[suffix] = sha256_file(path)
        record = {"producer": producer, "files": hashes, "dvbench": __version__}
        write_text_atomic(record_path, json.dumps(record, indent=2, sort_keys=True, default=_jsonable) + "\n")

    def producer(self, name: str) -> dict[str, Any]:
        """The recorded producer of a saved artifact."""
        return json.loads(self.path(name, ".json").read_text(encoding="utf-8"))["producer"]


def _difference(old: Any, new: Any, path: str = "") -> str:
    """The first place where two producers differ, as ``config.batch_size: 8 -> 16``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if canonical(old.get(key)) != canonical(new.get(key)):
                return _difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return f"{path or 'producer'}: {json.dumps(old, default=_jsonable)[:60]} -> {json.dumps(new, default=_jsonable)[:60]}"


def write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """Arrays to an ``.npz`` file at ``path`` exactly (no suffix added)."""
    import numpy as np

    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def read_npz(path: Path) -> dict[str, Any]:
    """The arrays of an ``.npz`` file; never unpickles."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def write_safetensors(path: Path, tensors: Mapping[str, Any]) -> None:
    """Torch tensors to a safetensors file at ``path`` exactly."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file (no pickle)."""
    from safetensors.torch import load_file

    return load_file(str(path))


class Shards:
    """A valuator's intermediate arrays in ``task.work``, one atomic ``.npz`` file per shard.

    A shard written once is read back, not recomputed: an interrupted run resumes from the
    finished shards, and spec entries that share the work folder share the work. The runner
    names the folder after everything that produced it, so a shard never outlives its inputs.
    With no folder, nothing is kept.
    """

    def __init__(self, folder: Path | None):
        self.folder = None if folder is None else Path(folder)

    def get(self, name: str) -> dict[str, Any] | None:
        """The arrays of shard ``name``, or ``None`` when it was never finished."""
        if self.folder is None or not (self.folder / f"{name}.npz").is_file():
            return None
        return read_npz(self.folder / f"{name}.npz")

    def put(self, name: str, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Save ``arrays`` as shard ``name`` (atomically) and return them."""
        if self.folder is not None:
            write_atomic(self.folder / f"{name}.npz", lambda tmp: write_npz(tmp, arrays))
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
    found = {start: shards.get(f"{name}-{start:08d}") for start in starts}
    for start, arrays in found.items():
        if arrays is not None and skipped is not None:
            skipped(len(items[start:start + size]))
    missing = [start for start, arrays in found.items() if arrays is None]
    results = (executor or LocalExecutor()).map(compute, [items[start:start + size] for start in missing])
    for start, arrays in zip(missing, results):
        found[start] = shards.put(f"{name}-{start:08d}", arrays)
    return [found[start] for start in starts]
