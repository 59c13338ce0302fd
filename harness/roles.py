"""The four roles a plugin can fill. Subclass one, set ``name``, ``version`` and ``Config``,
implement its one method, and register the class through the matching hook.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from dvbench.harness.config import Config
from dvbench.harness.records import EvalResult, EvalTask, Scores, Selection, TrainedModel, TrainingTask, ValuationTask


class Plugin(abc.ABC):
    """What every role shares: a registered name, a version, and a validated config."""

    role: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[Config]] = Config
    #: Whether the role loads the spec's model. A run whose roles all say no resolves no model
    #: (a spec of ``random`` and ``file`` valuators needs neither weights nor a tokenizer).
    needs_model: ClassVar[bool] = True

    def __init__(self, config: Config | None = None):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{self.name} takes a {self.Config.__qualname__}, not {config!r}")

    def check(self) -> None:
        """Raise :class:`~dvbench.harness.errors.InputError` for what would stop this plugin later
        in a run but can be seen now, offline and without loading a model (a missing API key, a
        model name that does not resolve); ``dvbench check`` calls it. By default: nothing."""

    def provenance(self) -> dict[str, Any]:
        """What produced an artifact: plugin name, version and config, as JSON-ready data."""
        return {"plugin": self.name, "version": self.version, "config": self.config.model_dump(mode="json")}


class Valuator(Plugin):
    """Scores every candidate against the anchors; higher = more valuable."""

    role = "valuator"
    #: Config keys that only change how saved work is aggregated (``aggregate``): spec entries
    #: that differ only in these share one ``task.work`` folder, so the work is done once.
    derived: ClassVar[tuple[str, ...]] = ()
    #: Whether ``task.work`` depends on the anchors. A valuator whose work is a function of the
    #: candidates alone (``grad_store``'s gradient store) sets ``False``: its folder is keyed
    #: without the anchors, so a later run on other anchors reuses it.
    anchored_work: ClassVar[bool] = True

    @abc.abstractmethod
    def score(self, task: ValuationTask) -> Scores:
        """Score ``task.candidates`` against ``task.anchors``; build the result with :meth:`scores`."""

    def scores(
        self,
        task: ValuationTask,
        values: Sequence[float] | np.ndarray,
        per_anchor: np.ndarray | None = None,
        *,
        details: Mapping[str, np.ndarray] | None = None,
        stats: Mapping[str, int | float] | None = None,
    ) -> Scores:
        """Stamp raw values (in ``task.candidates`` order) as this valuator's :class:`Scores`."""
        return Scores(
            candidate_ids=tuple(c.id for c in task.candidates),
            values=values,
            valuator=self.name,
            version=self.version,
            config=self.provenance()["config"],
            per_anchor=per_anchor,
            anchor_ids=tuple(a.id for a in task.anchors) if per_anchor is not None else None,
            details=details or {},
            stats=stats or {},
        )


class Selector(Plugin):
    """Turns one valuator's scores into named training subsets."""

    role = "selector"
    needs_model = False

    @abc.abstractmethod
    def select(self, scores: Scores, *, reference: Scores, seed: int) -> Selection:
        """Choose subsets from ``scores``; ``reference`` is the spec's reference valuator's
        scores (``scores`` itself when none is set), for selectors that match its bins."""

    def selection(self, subsets: Mapping[str, Sequence[str]]) -> Selection:
        """Stamp named subsets of candidate ids as this selector's :class:`Selection`."""
        return Selection(
            subsets=subsets,
            selector=self.name,
            version=self.version,
            config=self.provenance()["config"],
        )


class Trainer(Plugin):
    """Fine-tunes a model on a subset of the candidates."""

    role = "trainer"

    @abc.abstractmethod
    def train(self, task: TrainingTask) -> TrainedModel:
        """Fine-tune ``task.model`` on ``task.examples``, save it to ``task.out`` and return it."""


class Evaluator(Plugin):
    """Measures a model on an eval set.

    ``hands_units``: False (the default), each evaluation of a model is a unit of work of the
    run's executor; True, :meth:`evaluate` runs in the driver and hands its own units to
    ``task.executor`` (win_rate's generation batches), reaching the fine-tuned model inside them
    through ``task.model_folder``.
    """

    role = "evaluator"
    hands_units: ClassVar[bool] = False

    @abc.abstractmethod
    def evaluate(self, task: EvalTask) -> EvalResult:
        """Measure ``task.model`` (against ``task.base``) on ``task.examples``."""


ROLES: dict[str, type[Plugin]] = {
    "valuator": Valuator,
    "selector": Selector,
    "trainer": Trainer,
    "evaluator": Evaluator,
}
