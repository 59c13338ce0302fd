"""Where independent units of work run: valuation shards, fine-tunes, evaluations.

A stage (or a valuator, through its task) hands an :class:`Executor` a function and the units
to apply it to; the executor returns the results in the units' order, and the caller writes
every artifact itself, so where a unit ran never changes what is written. :class:`LocalExecutor`
runs them in this process, one after another; :class:`~dvbench.harness.ray_executor.RayExecutor`
runs them on Ray workers, so ``fn`` must be picklable with what it captures (a model is reached
inside it through :func:`~dvbench.harness.lm.models.resident`, never captured).

    for start, arrays in zip(pending, executor.map(compute, pending)):
        shards.put(name(start), arrays)

A unit that writes a folder (a fine-tune's model) runs through :meth:`Executor.map_into`: it
gets a folder to write into and its scratch folder, and the folder's files are in the output
folder when its result comes back. A unit that reads a folder of the output folder (a
fine-tuned model) gets it as a :class:`Folder` from :meth:`Executor.ship` and opens it with
``folder.path()`` where it runs. Locally both are the output folder's own paths; on Ray a
worker writes into and reads from folders of its own, and the driver writes the files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dvbench.harness.paths import inside

Folders = Sequence[tuple[Path, Path | None]]  # each unit's (out, work): its folder and its scratch folder


class Folder:
    """A folder of the output folder as a unit reaches it, wherever the unit runs."""

    def __init__(self, path: Path):
        self._path = Path(path)

    def path(self) -> Path:
        """The folder here: the output folder's own in this process."""
        return self._path


class Executor:
    """Runs ``fn`` on every unit; results come back in the units' order."""

    def map(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def map_into(self, fn: Callable[[Any, Path, Path | None], Any], units: Iterable[Any],
                 folders: Folders) -> Iterator[Any]:
        """``fn(unit, out, work)`` on every unit with its ``(out, work)`` of ``folders``: ``out``
        holds what ``fn`` wrote there by the time its result comes back; ``work`` is its scratch
        folder (resumable where it is the output folder's own)."""
        raise NotImplementedError

    def ship(self, folder: Path) -> Folder:
        """``folder`` (in the output folder) as the units to come open it."""
        return Folder(folder)

    def close(self) -> None:
        """Release the workers, if any (the runner calls it when the run ends)."""


class LocalExecutor(Executor):
    """In this process, in order: each result is yielded as soon as its unit is done, so the
    caller saves it before the next unit starts (an interrupted run keeps every finished unit).
    A unit writes into, and reads from, the output folder's own folders."""

    def map(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        for unit in units:
            yield fn(unit)

    def map_into(self, fn: Callable[[Any, Path, Path | None], Any], units: Iterable[Any],
                 folders: Folders) -> Iterator[Any]:
        for unit, (out, work) in zip(units, folders):
            yield fn(unit, out, work)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: ``{relative posix path: bytes}``, in path order."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def files_key(files: Mapping[str, bytes]) -> str:
    """The SHA-256 of a folder's files (names and contents): equal folders, equal keys."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(f"{relative}\0{hashlib.sha256(files[relative]).hexdigest()}\0".encode())
    return digest.hexdigest()


def write_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    """``files`` (as :func:`folder_files` gives them) as ``folder``, complete or absent: written
    into ``<folder>.partial`` beside it, then renamed into place."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for relative, data in files.items():
        path = inside(partial, partial / relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
