"""Progress reporting for long work. Roles call it; the CLI shows it; tests keep it quiet.

``with progress.task("icp pairs", total=n, unit="pairs") as advance: advance(k)``: ``k`` more
done; ``advance(k, note)`` also says what is being done (shown beside the rate; ``advance(0,
note)`` only says it). Tasks nest: a stage, and inside it a valuator's pairs or a model's steps.
``progress.note(line)`` prints a one-line notice among the progress lines;
``progress.workers(alive, total)``, from a distributed executor while its units run, shows
``alive/total workers`` beside the outermost task (``workers(None, total)`` when they are done).

A unit of work may run on another process (a Ray worker, :mod:`dvbench.harness.ray_executor`)
with the ``advance`` of its task inside it: pickled, an ``advance`` becomes a :class:`Relayed`
there, which records its calls in :data:`RELAYED`; the executor hands them back with the unit's
result and :func:`replay` applies them to the display here. A pickled display is a quiet
:class:`Progress` (a worker's own nested tasks show nothing).

:func:`reporter` picks the display: :class:`RichProgress` (live rows) on a terminal,
:class:`LineProgress` (one plain line per event: no bars, nothing redrawn) in a log file.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Advance = Callable[..., None]  # advance(n=1, note=""): n more done; note, if given, shown beside the rate

RELAYED: list[tuple[int, int, str]] = []  # in a worker: (task, n, note) of every advance since the unit began
_TASKS: dict[int, "_Advance"] = {}  # here: every open task's advance, by token
_TOKENS = itertools.count()


class Relayed:
    """The ``advance`` of a task open in another process: each call is recorded in :data:`RELAYED`."""

    def __init__(self, token: int):
        self.token = token

    def __call__(self, n: int = 1, note: str = "") -> None:
        RELAYED.append((self.token, n, note))


class _Advance:
    """A task's ``advance``; pickled, it travels as a :class:`Relayed` of its token."""

    def __init__(self, advance: Advance):
        self._advance, self.token = advance, next(_TOKENS)
        _TASKS[self.token] = self

    def __call__(self, n: int = 1, note: str = "") -> None:
        self._advance(n, note)

    def __reduce__(self):
        return Relayed, (self.token,)


def replay(calls: list[tuple[int, int, str]]) -> None:
    """Apply the advances a worker recorded to the tasks open here (a closed one's are dropped)."""
    for token, n, note in calls:
        advance = _TASKS.get(token)
        if advance is not None:
            advance(n, note)


class Progress:
    """Reports nothing: the default for library use and tests."""

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Advance]:
        yield lambda n=1, note="": None

    def expect(self, stage: str, units: int | None, like: str | None = None) -> None:
        """Work to come, for the run's time left: the outermost task ``stage`` will do ``units``
        units (None: not known yet), each about as long as one of stage ``like``'s (default: its own)."""

    def note(self, line: str) -> None:
        """A one-line notice (the run's log); the quiet default prints it."""
        print(line)

    def workers(self, alive: int | None, total: int) -> None:
        """``alive`` of an executor's ``total`` workers can take units now (None: no units run)."""


def reporter(console=None) -> Progress:
    """The display for ``console`` (default: stderr): live rows on a terminal, plain lines otherwise."""
    from rich.console import Console

    console = console or Console(stderr=True)
    return RichProgress(console) if console.is_terminal else LineProgress(console.file)


def clock(seconds: float) -> str:
    """``H:MM:SS``, never cut."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Meter:
    """One task's count, rate and time left, measured from when it opened."""

    description: str
    total: int
    unit: str
    started: float
    done: int = 0
    note: str = ""
    now: float = field(default=0.0)

    def rate(self) -> str:
        """Items per second, or seconds per item when slower than one a second; empty before any
        is done or within the first second (a rate of a blink means nothing)."""
        seconds = self.now - self.started
        if not self.done or seconds < 1:
            return ""
        per = self.done / seconds
        return f"{per:.1f} {self.unit}/s" if per >= 1 else f"{seconds / self.done:.1f} s/{self.unit.removesuffix('s')}"

    def left(self) -> float | None:
        """Seconds left at the pace so far; None before a second has passed with something done."""
        seconds = self.now - self.started
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) * seconds / self.done if self.done and seconds >= 1 else None

    def eta(self) -> str:
        left = self.left()
        return f"ETA {clock(left)}" if left else ""

    def count(self) -> str:
        return f"{self.done}/{self.total} {self.unit}"

    def line(self) -> str:
        return ", ".join(part for part in (f"{self.description} {self.count()}", self.rate(), self.eta(), self.note)
                         if part)

    def summary(self) -> str:
        seconds = self.now - self.started
        return ", ".join(part for part in (f"{self.description}: {self.count()} in {clock(seconds)}", self.rate()) if part)


class _Tracked(Progress):
    """The bookkeeping both displays share: a stack of open meters on one clock."""

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self._now = now
        self._opened = now()
        self._open: list[Meter] = []
        self._plan: dict[str, tuple[int | None, str]] = {}  # stage to come -> (units, the stage it is like)
        self._pace: dict[str, float] = {}  # finished stage -> seconds per unit
        self._workers: tuple[int, int] | None = None  # (alive, total) while an executor's units run

    def workers(self, alive: int | None, total: int) -> None:
        shown = None if alive is None else (alive, total)
        if shown != self._workers:
            self._workers = shown
            if self._open:
                self.advanced(self._open[0])

    def pool(self) -> str:
        """``alive/total workers`` while a distributed executor's units run; else empty."""
        return f"{self._workers[0]}/{self._workers[1]} workers" if self._workers else ""

    def expect(self, stage: str, units: int | None, like: str | None = None) -> None:
        self._plan[stage] = (units, like or stage)

    def run_eta(self) -> str:
        """The run's time left: the open stage's, and each stage expected after it at the pace of
        the stage it is like (the open one's pace so far counts); ``≥`` while some of them have no
        pace yet. Empty when nothing else
        is expected or the open stage has no pace yet."""
        stage = self._open[0] if self._open else None
        later = {name: plan for name, plan in self._plan.items() if stage is None or name != stage.description}
        left = stage.left() if stage is not None else None
        if not later or left is None:
            return ""
        pace = {**self._pace, stage.description: (stage.now - stage.started) / stage.done} if stage.done else self._pace
        known = [units * pace[like] for units, like in later.values() if units is not None and like in pace]
        return f"run ETA {'≥ ' if len(known) < len(later) else ''}{clock(left + sum(known))}"

    def elapsed(self) -> str:
        return clock(self._now() - self._opened)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Advance]:
        now = self._now()
        meter = Meter(description, total, unit, now, now=now)
        self._open.append(meter)
        self.opened(meter)

        def advance(n: int = 1, note: str = "") -> None:
            meter.done += n
            meter.note = note or meter.note
            now = self._now()
            for open_meter in self._open:  # the enclosing tasks' rates and times left move on too
                open_meter.now = now
            self.advanced(meter)

        relay = _Advance(advance)
        try:
            yield relay
        finally:
            _TASKS.pop(relay.token, None)  # a closed task takes no late calls
            meter.now = self._now()
            self._open.remove(meter)
            if not self._open:
                self._plan.pop(description, None)
                if meter.done:
                    self._pace[description] = (meter.now - meter.started) / meter.done
            self.closed(meter, outermost=not self._open)

    def __reduce__(self):
        return Progress, ()

    def opened(self, meter: Meter) -> None: ...

    def advanced(self, meter: Meter) -> None: ...

    def closed(self, meter: Meter, outermost: bool) -> None: ...


class LineProgress(_Tracked):
    """One plain line per event, for log files: each stage's start and end, every notice, and at
    most one line of the open tasks (stage › what › its steps) every ``every`` seconds."""

    def __init__(self, stream=None, every: float = 10.0, now: Callable[[], float] = time.monotonic):
        super().__init__(now)
        self._stream = stream
        self._every = every
        self._last = float("-inf")

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(f"[{self.elapsed()}] {text}\n")
        stream.flush()

    def note(self, line: str) -> None:
        self._write(line)

    def opened(self, meter: Meter) -> None:
        if len(self._open) == 1 and meter.total:
            self._write(f"{meter.description}: {meter.total} {meter.unit}")

    def advanced(self, meter: Meter) -> None:
        if meter.now - self._last >= self._every:
            self._last = meter.now
            lines = [m.line() for m in self._open]
            lines[0] += "".join(f", {pool}" for pool in [self.pool()] if pool)
            self._write(" › ".join(lines) + "".join(f"; {eta}" for eta in [self.run_eta()] if eta))

    def closed(self, meter: Meter, outermost: bool) -> None:
        if outermost and meter.total:
            self._write(meter.summary())


class RichProgress(_Tracked):
    """A live terminal display: one row per open task (what, bar, count, rate, time left); a row
    goes when its task ends, and a finished stage leaves one line saying what it did and how fast.
    The display closes when the outermost task ends."""

    def __init__(self, console=None, now: Callable[[], float] = time.monotonic):
        from rich.console import Console

        super().__init__(now)
        self.console = console or Console(stderr=True)
        self._live = None
        self._rows: dict[int, int] = {}

    def _display(self):
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Live

        return Live(TextColumn("{task.description}"), BarColumn(bar_width=24), TextColumn("{task.fields[count]}"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                    TextColumn("{task.fields[note]}"), TextColumn("{task.fields[run]}"), console=self.console,
                    transient=True)

    def note(self, line: str) -> None:
        (self._live.console if self._live else self.console).print(line, highlight=False, soft_wrap=True)

    def opened(self, meter: Meter) -> None:
        if self._live is None:
            self._live = self._display()
            self._live.start()
        self._rows[id(meter)] = self._live.add_task(meter.description, total=meter.total, **self._fields(meter))

    def advanced(self, meter: Meter) -> None:
        for open_meter in self._open:
            self._live.update(self._rows[id(open_meter)], completed=open_meter.done, **self._fields(open_meter))

    def closed(self, meter: Meter, outermost: bool) -> None:
        self._live.remove_task(self._rows.pop(id(meter)))
        if outermost:
            if meter.total:
                self.console.print(meter.summary(), highlight=False)
            self._live.stop()
            self._live = None

    def _fields(self, meter: Meter) -> dict:
        return {"count": meter.count(), "rate": meter.rate(), "eta": meter.eta(), "note": meter.note,
                "run": ", ".join(p for p in (self.pool(), self.run_eta()) if p) if meter is self._open[0] else ""}
