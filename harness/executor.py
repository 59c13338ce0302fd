"""Where independent units of work run: valuation shards, fine-tunes, evaluations.

A stage (or a valuator, through its task) hands an :class:`Executor` a function and the units
to apply it to; the executor returns the results in the units' order, and the caller writes
every artifact itself, so where a unit ran never changes what is written. :class:`LocalExecutor`
runs them in this process, one after another; :class:`~dvbench.harness.ray_executor.RayExecutor`
runs them on Ray workers, so ``fn`` must be picklable with what it captures (a model is reached
inside it through :func:`~dvbench.harness.lm.models.resident`, never captured).

    for start, arrays in zip(pending, executor.map(compute, pending)):
        shards.put(name(start), arrays)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Executor:
    """Runs ``fn`` on every unit; results come back in the units' order."""

    def map(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers, if any (the runner calls it when the run ends)."""


class LocalExecutor(Executor):
    """In this process, in order: each result is yielded as soon as its unit is done, so the
    caller saves it before the next unit starts (an interrupted run keeps every finished unit)."""

    def map(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        for unit in units:
            yield fn(unit)
