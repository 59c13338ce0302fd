"""Progress reporting for long work. Roles call it; the CLI shows it; tests keep it quiet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[int], None]


class Progress:
    """Reports nothing: the default for library use and tests.

    ``with progress.task("scoring pairs", total=n, unit="pairs") as advance: advance(k)``
    """

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Advance]:
        yield lambda n=1: None


class RichProgress(Progress):
    """A live terminal display: stage, bar, count, items per second and time left."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Advance]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Live

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Live(*columns, console=self.console, transient=False) as live:
            task_id = live.add_task(description, total=total, rate="")

            def advance(n: int = 1) -> None:
                live.advance(task_id, n)
                speed = live.tasks[task_id].speed
                live.update(task_id, rate=f"{speed:.1f} {unit}/s" if speed else "")

            yield advance
