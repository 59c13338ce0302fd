"""Progress reporting for long work. Roles call it; the CLI shows it; tests keep it quiet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[..., None]  # advance(n=1, note=""): n more done; note, if given, shown beside the rate


class Progress:
    """Reports nothing: the default for library use and tests.

    ``with progress.task("scoring pairs", total=n, unit="pairs") as advance: advance(k)``
    """

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Advance]:
        yield lambda n=1, note="": None


class RichProgress(Progress):
    """A live terminal display: stage, bar, count, items per second and time left.

    Tasks may nest (a stage, and inside it a valuator's pairs): each adds a row to one display,
    which closes when the outermost task ends.
    """

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._live = None
        self._depth = 0

    def _display(self):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Live

        return Live(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Advance]:
        if self._live is None:
            self._live = self._display()
            self._live.start()
        self._depth += 1
        live = self._live
        task_id = live.add_task(description, total=total, rate="")

        def advance(n: int = 1, note: str = "") -> None:
            live.advance(task_id, n)
            speed = live.tasks[task_id].speed
            rate = f"{speed:.1f} {unit}/s" if speed else ""
            live.update(task_id, rate=f"{rate}, {note}" if rate and note else rate or note)

        try:
            yield advance
        finally:
            self._depth -= 1
            if self._depth == 0:
                live.stop()
                self._live = None
