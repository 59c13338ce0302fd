"""Batch sizes that fill the device: ``batch_size: auto`` (and ``max_batch_tokens: auto``), and
the back-off that keeps a run going when a unit of work runs out of memory.

A knob set to ``auto`` starts, on a GPU, at its ceiling (all the work of one unit in one batch:
a shard's pairs, a step's examples) and is halved each time a unit runs out of memory; the first
unit to finish fixes it for the rest of the run, as lm-eval's ``--batch_size auto`` does (its
search runs on the first batch). A later unit that still runs out of memory (its rows are
longer) halves it again and runs once more; finished units are saved by then, so no work is
lost. On the CPU ``auto`` is the knob's default: the CPU raises no out-of-memory error to search
by (the kernel's OOM killer ends the process instead) and its throughput stops growing well
below that size. A knob set to a number is never changed: running out of memory there is one
line naming the knob and what to set. The sizes a unit ran at come back with its results
(:meth:`Sizes.record`), so they are recorded wherever the unit ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import PlainValidator

from dvbench.harness.config import TypeText
from dvbench.harness.errors import InputError

AUTO = "auto"


def _batch_size(value: Any) -> int | str:
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"a batch size is an integer ≥ 1 or {AUTO!r}")


BatchSize = Annotated[int | str, PlainValidator(_batch_size), TypeText("integer ≥ 1 or `auto`")]
T = TypeVar("T")


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is torch running out of device memory (CUDA's error, or the CPU
    allocator's refusal of one allocation larger than the machine has)."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


class Sizes:
    """The current value of each batch-size knob of one role, by name.

    ``knobs`` maps a knob's name to ``(setting, default, ceiling)``: ``setting`` a number or
    ``auto``, ``default`` what ``auto`` is on the CPU, ``ceiling`` where it starts on a GPU.
    ``what`` names the role in messages (``valuators.icp``); ``log`` receives a line when a
    knob backs off.
    """

    def __init__(self, knobs: Mapping[str, tuple[int | str, int, int]], *, device: str, what: str,
                 log: Callable[[str], None] | None = None):
        gpu = device.startswith("cuda")
        self.auto = {name for name, (setting, _, _) in knobs.items() if setting == AUTO}
        self.value = {name: (max(1, ceiling if gpu else default) if setting == AUTO else int(setting))
                      for name, (setting, default, ceiling) in knobs.items()}
        self.device, self.what, self.log = device, what, log or _silent

    @classmethod
    def of(cls, config, ceilings: Mapping[str, int], **kwargs) -> Sizes:
        """The knobs named in ``ceilings`` as set in a plugin's ``config``, their defaults its
        fields' defaults."""
        fields = type(config).model_fields
        return cls({name: (getattr(config, name), fields[name].default, ceiling) for name, ceiling in ceilings.items()},
                   **kwargs)

    def __getstate__(self) -> dict:
        """Pickled for a Ray worker without ``log`` (the driver's display): a back-off there is
        silent, and recorded with the unit's results all the same."""
        return {**self.__dict__, "log": _silent}

    def __getitem__(self, name: str) -> int:
        return self.value[name]

    def run(self, unit: Callable[[Callable[..., None]], T], advance: Callable[..., None] | None = None) -> T:
        """``unit(advance)``, run again with the ``auto`` knobs halved each time it runs out of
        memory; the progress a failed attempt made is taken back from ``advance``."""
        while True:
            made = [0]

            def counted(n: int = 1, note: str = "") -> None:
                made[0] += n
                if advance is not None:
                    advance(n, note) if note else advance(n)

            try:
                return unit(counted)
            except Exception as error:  # noqa: BLE001 - anything but running out of memory is re-raised
                if not out_of_memory(error):
                    raise
            if advance is not None and made[0]:
                advance(-made[0])
            self._back_off()

    def record(self) -> dict[str, np.ndarray]:
        """The knobs' values, kept with a unit's results (``size_<knob>``), so they are recorded
        wherever the unit ran."""
        return {f"size_{name}": np.int64(value) for name, value in self.value.items()}

    def _back_off(self) -> None:
        _free_cache(self.device)
        shrinking = [name for name in sorted(self.auto) if self.value[name] > 1]
        if not shrinking:
            values = ", ".join(f"{name} {self.value[name]}" for name in sorted(self.value))
            fixed = sorted(set(self.value) - self.auto)
            advice = (f"set {' and '.join(fixed)} lower, or to auto" if fixed else
                      "shorten the sequences (the template's limits) or use a device with more memory")
            raise InputError(f"{self.what}: out of memory on {self.device} at {values}; {advice}")
        for name in shrinking:
            self.value[name] //= 2
        self.log(f"{self.what}: out of memory on {self.device}; running the unit again at "
                 + ", ".join(f"{name} {self.value[name]}" for name in shrinking))


def ran_at(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The smallest value each knob had in ``results`` (units' :meth:`Sizes.record`): what the
    run ran at, for its stats."""
    found: dict[str, int] = {}
    for result in results:
        for key, value in result.items():
            if key.startswith("size_"):
                name = key.removeprefix("size_")
                found[name] = min(found.get(name, int(value)), int(value))
    return found


def _silent(line: str) -> None:
    pass


def _free_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
