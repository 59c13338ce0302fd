"""Artifacts on disk, each written atomically beside a record of what produced it.

An artifact is one or more files plus ``<name>.json``: the producer (plugin, version, config,
data fingerprints, seed) and each file's SHA-256. :meth:`ArtifactStore.find` returns the files
only when the record exists, names the same producer and every hash matches; anything else
(a different config, a half-written file) is recomputed, never reused.

A valuator's or trainer's intermediate files live in its work folder (:mod:`dvbench.harness.work`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from dvbench.harness import __version__
from dvbench.harness.paths import inside
from dvbench.harness.records import Example, Scores


def canonical(data: Any) -> str:
    """JSON with sorted keys: equal data, equal text (as :func:`json_text` writes it)."""
    return json.dumps(_plain(data), sort_keys=True, ensure_ascii=False, allow_nan=False, default=_refuse)


def json_text(data: Any, **options: Any) -> str:
    """The one way dvbench writes JSON: valid JSON (RFC 8259) and a final newline. NaN and
    ±infinity become ``null`` (JSON has no such numbers); numpy scalars and arrays become
    numbers and lists, dataclasses and mappings objects. ``options``: ``json.dumps``'s
    (``indent``, ``sort_keys``)."""
    return json.dumps(_plain(data), allow_nan=False, default=_refuse, **options) + "\n"


def _plain(value: Any) -> Any:
    """``value`` as JSON's types, non-finite floats as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, type(None))):
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # numpy scalars and arrays
        return _plain(value.tolist())
    return value


def _refuse(value: Any) -> Any:
    raise TypeError(f"cannot record {type(value).__name__} in JSON")


def fingerprint(examples: Iterable[Example]) -> str:
    """SHA-256 of the examples' ids, texts and subsets, in order."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(canonical([e.id, e.instruction, e.input, e.output, e.subset]).encode())
    return digest.hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The file's SHA-256, computed once per process for each (path, size, modification time):
    a file rewritten since is hashed again."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


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

    def path(self, name: str, suffix: str = "") -> Path:
        """Where artifact file ``name + suffix`` lies: inside the output folder, or refused."""
        return inside(self.root, self.root / f"{name}{suffix}")

    def clean(self) -> int:
        """Remove what killed writes left (``.*.tmp`` files, ``*.partial`` folders); how many."""
        left = [p for p in self.root.rglob(".*.tmp") if p.is_file()] + \
               [p for p in self.root.rglob("*.partial") if p.is_dir()]
        for path in left:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return len(left)

    def find(self, name: str, producer: Mapping[str, Any]) -> tuple[dict[str, Path] | None, str]:
        """The artifact's files if it was produced by ``producer`` and is whole (every file,
        and every file of its folder, hashing as recorded); else why not."""
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
            if not path.is_file() or sha256_file(path) != digest:
                return None, f"{path.name} is missing or changed since it was written"
            files[suffix] = path
        for relative, digest in record.get("folder", {}).items():
            path = self.path(name, f"/{relative}")
            if not path.is_file() or sha256_file(path) != digest:
                return None, f"{name}/{relative} is missing or changed since it was written"
        return files, "up to date"

    def save(self, name: str, producer: Mapping[str, Any], writers: Mapping[str, Callable[[Path], None]],
             folder: bool = False) -> None:
        """Write each ``suffix -> writer`` file atomically, then the record that vouches for them;
        with ``folder``, for every file of the folder ``<name>/`` too (a model a trainer saved)."""
        record_path = self.path(name, ".json")
        record_path.unlink(missing_ok=True)  # no stale record may vouch for new files
        hashes = {}
        for suffix, write in writers.items():
            path = self.path(name, suffix)
            write_atomic(path, write)
            hashes[suffix] = sha256_file(path)
        record = {"producer": producer, "files": hashes, "dvbench": __version__}
        if folder:
            root = self.path(name)
            record["folder"] = {p.relative_to(root).as_posix(): sha256_file(p)
                                for p in sorted(root.rglob("*")) if p.is_file()}
        write_text_atomic(record_path, json_text(record, indent=2, sort_keys=True))

    def producer(self, name: str) -> dict[str, Any]:
        """The recorded producer of a saved artifact."""
        return json.loads(self.path(name, ".json").read_text(encoding="utf-8"))["producer"]

    def save_scores(self, name: str, producer: Mapping[str, Any], scores: Scores) -> None:
        """``<name>.parquet`` (candidate_id, score), and when given ``.per_anchor.parquet``
        (candidate_id, one column per anchor id), ``.details.npz`` and ``.stats.json``."""
        import polars as pl

        writers = {".parquet": pl.DataFrame({"candidate_id": scores.candidate_ids,
                                             "score": scores.values}).write_parquet}
        if scores.per_anchor is not None:
            matrix = pl.DataFrame({"candidate_id": scores.candidate_ids,
                                   **dict(zip(scores.anchor_ids, scores.per_anchor))})
            writers[".per_anchor.parquet"] = matrix.write_parquet
        if scores.details:
            writers[".details.npz"] = lambda tmp: write_npz(tmp, scores.details)
        if scores.stats:
            writers[".stats.json"] = _json_writer(scores.stats, indent=2)
        self.save(name, producer, writers)

    def load_scores(self, name: str, producer: Mapping[str, Any]) -> tuple[Scores | None, str]:
        """The scores saved under ``name`` if ``producer`` made them and they are whole; else why not."""
        import polars as pl

        files, why = self.find(name, producer)
        if files is None:
            return None, why
        frame = pl.read_parquet(files[".parquet"])
        per_anchor, anchor_ids = None, None
        if ".per_anchor.parquet" in files:
            matrix = pl.read_parquet(files[".per_anchor.parquet"]).drop("candidate_id")
            anchor_ids, per_anchor = tuple(matrix.columns), matrix.to_numpy().T
        details = read_npz(files[".details.npz"]) if ".details.npz" in files else {}
        stats = json.loads(files[".stats.json"].read_text()) if ".stats.json" in files else {}
        scores = Scores(tuple(frame["candidate_id"].to_list()), frame["score"].to_numpy(), producer["plugin"],
                        producer["version"], producer["config"], per_anchor, anchor_ids, details, stats)
        return scores, why

    def save_frame(self, name: str, producer: Mapping[str, Any], frame, markdown: Callable | None = None) -> None:
        """A polars frame as ``<name>.parquet``; with ``markdown`` (frame -> text), also as
        ``.csv`` and ``.md`` (the leaderboard's tables)."""
        writers = {".parquet": frame.write_parquet}
        if markdown is not None:
            writers[".csv"] = frame.write_csv
            writers[".md"] = lambda tmp: tmp.write_text(markdown(frame), encoding="utf-8")
        self.save(name, producer, writers)

    def save_json(self, name: str, producer: Mapping[str, Any], data: Any, folder: bool = False,
                  beside: Mapping[str, Any] | None = None) -> None:
        """JSON data as ``<name>.metrics.json`` (a trained model's or an evaluation's metrics);
        ``beside``: more JSON documents of the artifact, ``{file: data}`` saved as ``<name>.<file>``
        (win_rate's ``model_outputs.json``); ``folder``: see :meth:`save`."""
        documents = {".metrics.json": data, **{f".{file}": doc for file, doc in (beside or {}).items()}}
        self.save(name, producer, {suffix: _json_writer(doc, indent=1) for suffix, doc in documents.items()}, folder)

    def load_json(self, name: str, producer: Mapping[str, Any]) -> tuple[Any | None, str]:
        """The data :meth:`save_json` saved under ``name``, if ``producer`` made it and it is
        whole; else ``None`` and why not."""
        files, why = self.find(name, producer)
        return (None if files is None else json.loads(files[".metrics.json"].read_text(encoding="utf-8"))), why


def _json_writer(data: Any, **options: Any) -> Callable[[Path], None]:
    text = json_text(data, **options)
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def _difference(old: Any, new: Any, path: str = "") -> str:
    """The first place where two producers differ, as ``config.batch_size: 8 -> 16``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if canonical(old.get(key)) != canonical(new.get(key)):
                return _difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return f"{path or 'producer'}: {canonical(old)[:60]} -> {canonical(new)[:60]}"


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
