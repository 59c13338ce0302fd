"""Units of work on a pool of Ray workers (``execution.backend: ray``), with the same results as
in this process.

Each worker is an actor holding ``execution.num_cpus`` CPUs (its torch threads) and
``execution.num_gpus`` GPUs; a unit goes to whichever worker is free, and results come back
in the units' order, so the driver (this process) writes every artifact, as it would locally:
no worker writes a file and no shared filesystem is assumed. What a unit computes is the same
function of the same inputs (shard boundaries, seeds, reduction order) wherever it runs, so a
run's files are the same bytes under either backend; a worker keeps the model its units load
(:func:`~dvbench.harness.lm.models.resident`), so no unit ships a model.

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dvbench.harness.errors import InputError
from dvbench.harness.executor import Executor
from dvbench.harness.progress import RELAYED, replay

INSTALL = "pip install 'dvbench[ray]'"


def require_ray() -> None:
    """Raise :class:`InputError` when the ``ray`` package is missing (nothing is imported)."""
    if importlib.util.find_spec("ray") is None:
        raise InputError(f"execution.backend is 'ray' but the ray package is not installed; {INSTALL} "
                         "(or set execution.backend: local)")


class Worker:
    """One Ray actor: torch on ``threads`` threads; runs units, keeping the last function it got."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self._key, self._fn = None, None

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
    ``log`` receives one-line notices (the pool started, what ran where).
    """

    def __init__(self, execution, log: Callable[[str], None] = print):
        require_ray()
        self.execution, self.log = execution, log
        self._actors: list = []
        self._connected = False
        self._units = 0  # run on the workers so far

    @property
    def where(self) -> str:
        return self.execution.address or "a local Ray"

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
            while given < len(units):
                while idle and queue:
                    index, unit = queue.pop()
                    actor = idle.pop()
                    running[actor.run.remote([fn_ref], unit)] = (index, actor)
                ready, _ = ray.wait(list(running), num_returns=1)
                index, actor = running.pop(ready[0])
                result, calls = self._result(ready[0])
                replay(calls)
                done[index] = result
                idle.append(actor)
                self._units += 1
                while given in done:  # in the units' order: the caller writes each as it comes
                    yield done.pop(given)
                    given += 1

    def close(self) -> None:
        if not self._actors and not self._connected:
            return
        import ray

        if self._units:
            self.log(f"ray: {self._units} unit(s) ran on {len(self._actors)} worker(s) of {self.where}")
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
