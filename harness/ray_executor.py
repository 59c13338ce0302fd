"""Units of work on a pool of Ray workers (``execution.backend: ray``), with the same results as
in this process.

Each worker is an actor holding ``execution.num_cpus`` CPUs (its torch threads) and
``execution.num_gpus`` GPUs; a unit goes to whichever worker is free, and results come back
in the units' order, so the driver (this process) writes every artifact, as it would locally:
no worker writes a file and no shared filesystem is assumed. What a unit computes is the same
function of the same inputs (shard boundaries, seeds, reduction order) wherever it runs, so a
run's files are the same bytes under either backend; a worker keeps the model its units load
(:func:`~dvbench.harness.lm.models.resident`), so no unit ships a model.

Folders travel, the output folder stays on the driver: a unit of :meth:`RayExecutor.map_into`
(a fine-tune) writes into a temporary folder of its worker, whose files come back with its
result and are written by the driver where a local run's unit writes them; a folder a unit
reads (a fine-tuned model) is shipped once by :meth:`RayExecutor.ship` (``ray.put`` of its
files) and copied, the first time a unit of a worker opens it, into that worker's own temporary
folder under the key of its files' hashes. A unit's scratch folder (a trainer's checkpoints) is
a temporary folder of its worker, gone with the unit.

A unit's function is pickled once per :meth:`RayExecutor.map` (cloudpickle: a closure travels
with what it captures, which must be small and picklable; a display's ``advance`` travels as a
relay, :mod:`dvbench.harness.progress`). A worker killed mid-unit is restarted and the unit
run again, up to ``execution.max_retries`` times; a cluster that cannot be reached, or is
lost, stops the run with one line naming its address, every finished artifact kept (a rerun of
the same command resumes from them, under either backend).

``ray`` is an optional dependency (``pip install 'dvbench[ray]'``), imported only here, when
the first unit is handed out.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from dvbench.harness.errors import InputError
from dvbench.harness.executor import Executor, Folder, Folders, LocalExecutor, files_key, folder_files, write_folder
from dvbench.harness.progress import RELAYED, Progress, replay

INSTALL = "pip install 'dvbench[ray]'"


def require_ray() -> None:
    """Raise :class:`InputError` when the ``ray`` package is missing (nothing is imported)."""
    if importlib.util.find_spec("ray") is None:
        raise InputError(f"execution.backend is 'ray' but the ray package is not installed; {INSTALL} "
                         "(or set execution.backend: local)")


_SCRATCH: list[tempfile.TemporaryDirectory] = []  # this process's temporary folder, made when first needed


def _scratch() -> Path:
    """This process's own temporary folder: a worker's units' folders and shipped folders."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="dvbench-worker-"))
    return Path(_SCRATCH[0].name)


class ShippedFolder(Folder):
    """A folder of the driver's, shipped as an object of Ray's: a worker copies it once into its
    own temporary folder, ``<key>/<name>`` (the folder's name kept: a model's generator name)."""

    def __init__(self, name: str, key: str, files):
        self.name, self.key, self.files = name, key, files

    def path(self) -> Path:
        import ray

        folder = _scratch() / "shipped" / self.key / self.name
        if not folder.is_dir():
            write_folder(folder, ray.get(self.files))
        return folder


def _into(fn: Callable[[Any, Path, Path | None], Any], item: tuple[Any, str]) -> tuple[Any, dict | None]:
    """On a worker: ``fn(unit, out, work)`` with ``out`` (named as the driver's) and ``work`` in a
    temporary folder of its own; the result and ``out``'s files (None if it wrote none)."""
    unit, name = item
    with tempfile.TemporaryDirectory(dir=_scratch()) as tmp:
        out = Path(tmp) / "out" / name
        result = fn(unit, out, Path(tmp) / "work")
        return result, folder_files(out) if out.is_dir() else None


class Worker:
    """One Ray actor: torch on ``threads`` threads; runs units, keeping the last function it got."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self._key, self._fn = None, None

    def leave(self) -> None:
        """Remove this worker's temporary folder (before the driver ends it)."""
        while _SCRATCH:
            _SCRATCH.pop().cleanup()

    def run(self, fn: list, unit: Any) -> tuple[Any, list]:
        """``fn[0]``'s function (an object reference, fetched once) applied to ``unit``, and the
        progress its advances recorded."""
        import ray

        if fn[0].hex() != self._key:
            self._key, self._fn = fn[0].hex(), ray.get(fn[0])
        RELAYED.clear()
        result = self._fn(unit)
        return result, list(RELAYED)


class RayExecutor(Executor):
    """A pool of :class:`Worker` actors, started on the first :meth:`map` and ended by :meth:`close`.

    ``execution`` is the spec's section (:class:`~dvbench.harness.schema.ExecutionSection`);
    ``log`` receives one-line notices (the pool started, what ran where); ``progress`` is told
    how many workers are alive while units run (:meth:`~dvbench.harness.progress.Progress.workers`).
    Pickled (into a unit), it is a :class:`~dvbench.harness.executor.LocalExecutor`: a unit's
    own units run where it runs.
    """

    def __init__(self, execution, log: Callable[[str], None] = print, progress: Progress | None = None):
        require_ray()
        self.execution, self.log, self.progress = execution, log, progress or Progress()
        self._actors: list = []
        self._connected = False
        self._units = 0  # run on the workers so far

    def __reduce__(self):
        return LocalExecutor, ()

    @property
    def where(self) -> str:
        return self.execution.address or "a local Ray"

    def map_into(self, fn: Callable[[Any, Path, Path | None], Any], units: Iterable[Any],
                 folders: Folders) -> Iterator[Any]:
        """Each unit writes into a folder of its worker; the driver writes its files into ``out``
        before its result is yielded. ``work`` stays on the worker: a unit run again starts over."""
        units, folders = list(units), list(folders)
        items = [(unit, out.name) for unit, (out, _) in zip(units, folders)]
        for (out, _), (result, files) in zip(folders, self.map(partial(_into, fn), items)):
            if files is not None:
                write_folder(out, files)
            yield result

    def ship(self, folder: Path) -> Folder:
        """``folder``'s files put into Ray's object store once, for every unit that opens it."""
        import ray

        self._start()
        files = folder_files(folder)
        with self._reaching():
            return ShippedFolder(folder.name, files_key(files), ray.put(files))

    def map(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        units = list(units)
        if not units:
            return
        import ray

        self._start()
        with self._reaching():
            fn_ref = ray.put(fn)
            idle, queue, running, done, given = list(self._actors), list(enumerate(units)), {}, {}, 0
            queue.reverse()
            counted = float("-inf")
            try:
                while given < len(units):
                    while idle and queue:
                        index, unit = queue.pop()
                        actor = idle.pop()
                        running[actor.run.remote([fn_ref], unit)] = (index, actor)
                    if time.monotonic() - counted >= 1:
                        counted = time.monotonic()
                        self.progress.workers(self._alive(), len(self._actors))
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=1)
                    if not ready:
                        continue
                    index, actor = running.pop(ready[0])
                    result, calls = self._result(ready[0])
                    replay(calls)
                    done[index] = result
                    idle.append(actor)
                    self._units += 1
                    while given in done:  # in the units' order: the caller writes each as it comes
                        yield done.pop(given)
                        given += 1
            finally:
                self.progress.workers(None, len(self._actors))

    def close(self) -> None:
        if not self._actors and not self._connected:
            return
        import ray

        if self._units:
            self.log(f"ray: {self._units} unit(s) ran on {len(self._actors)} worker(s) of {self.where}")
        try:  # each worker removes its temporary folder; one that does not answer keeps it
            ray.get([actor.leave.remote() for actor in self._actors], timeout=30)
        except ray.exceptions.RayError:  # a dead or lost worker, or one that does not answer in time
            pass
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._connected:
            ray.shutdown()
            self._connected = False

    def _start(self) -> None:
        if self._actors:
            return
        import ray

        execution = self.execution
        if not ray.is_initialized():
            try:
                if execution.address is None:
                    with _quiet_auth_notice():
                        ray.init(address="local", num_cpus=execution.workers * execution.num_cpus,
                                 num_gpus=None if execution.num_gpus == 0 else execution.workers * execution.num_gpus,
                                 include_dashboard=False, logging_level="ERROR", configure_logging=False)
                else:
                    _answers(execution.address)
                    ray.init(address=execution.address, logging_level="ERROR", configure_logging=False)
            except (OSError, RuntimeError, ValueError) as error:
                raise InputError(f"execution.address {self.where}: no Ray cluster answers ({_first_line(error)}); "
                                 "start one (ray start --head) or fix the address") from None
            self._connected = True
        options = {"num_cpus": execution.num_cpus, "num_gpus": execution.num_gpus,
                   "max_restarts": execution.max_retries, "max_task_retries": execution.max_retries}
        actor = ray.remote(Worker).options(**options)
        self._actors = [actor.remote(execution.num_cpus) for _ in range(execution.workers)]
        self.log(f"ray: {execution.workers} worker(s) of {execution.num_cpus} CPU(s)"
                 f"{f' and {execution.num_gpus:g} GPU(s)' if execution.num_gpus else ''} each on {self.where}")

    def _alive(self) -> int:
        """How many of the workers Ray counts alive now (one dead or being restarted is not)."""
        from ray._private.state import actors

        return sum(actors(actor_id=actor._actor_id.hex()).get("State") == "ALIVE" for actor in self._actors)

    def _result(self, ref) -> tuple[Any, list]:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the unit's own exception, as it would be locally
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, BaseException) else error) from None
        except ray.exceptions.RayActorError:
            raise InputError(f"execution: a Ray worker of {self.where} died on one unit "
                             f"{self.execution.max_retries + 1} time(s) (execution.max_retries "
                             f"{self.execution.max_retries}); finished units are saved: run the same command "
                             "again to resume") from None

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """A lost cluster as one line naming its address."""
        import ray

        try:
            yield
        except (ray.exceptions.RaySystemError, ConnectionError) as error:
            raise InputError(f"execution.address {self.where}: lost the Ray cluster ({_first_line(error)}); "
                             "finished units are saved: run the same command again to resume") from None


def _answers(address: str, seconds: float = 10) -> None:
    """Raise :class:`OSError` unless something listens at ``address`` (``host:port`` or
    ``ray://host:port``; ``auto`` is Ray's own to find): Ray itself retries an address that
    does not answer for minutes."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if address != "auto" and colon and port.isdigit():
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def _quiet_auth_notice():
    """Ray's warning that the local cluster it starts has token authentication on (its default
    since 2.5x, the secure one) is not printed into a run: the rest of Ray's log stays as set."""
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        yield
    finally:
        notice.setLevel(level)
