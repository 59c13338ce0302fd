"""The frozen records passed between roles: examples, tasks, scores, selections, models, results.

Records are plain data. A role receives records and returns a record; the harness stores them.
Arrays inside records are float64 and read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from dvbench.harness.executor import Executor, Folder, LocalExecutor
from dvbench.harness.progress import Progress
from dvbench.harness.template import Template


def _frozen_array(values: Any, what: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{what} has shape {array.shape}; expected {shape}")
    array.setflags(write=False)
    return array


def best_first(ids: Any, values: Any) -> np.ndarray:
    """Positions ordered by value, highest first; equal values ordered by id. The one tie rule
    every selector and leaderboard table uses."""
    return np.lexsort((np.asarray(ids, dtype=str), -np.asarray(values, dtype=np.float64)))


@dataclass(frozen=True)
class Example:
    """One instruction example: ``(instruction, input) -> output`` with a stable id.

    ``subset`` groups examples for per-subset results (AlpacaEval's ``dataset``);
    ``meta`` carries any other columns (a baseline output, a planted-defect marker).
    """

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    subset: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from (``embedded``, a hub name, a local folder or a GGUF file) and
    where it runs: ``device``, a concrete torch device (``cpu``, ``cuda:0``) that
    :func:`~dvbench.harness.lm.models.load_model` puts it on; a run hands every role the device
    its spec's ``model.device`` resolves to."""

    source: str
    dtype: str = "float32"
    threads: int | None = None
    allow_download: bool = False
    trust_remote_code: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class ValuationTask:
    """What a valuator scores: every candidate against the anchor task set, with the model and
    the template (``dvbench.harness.lm``) every method shares.

    ``work`` is a folder for the valuator's intermediate results (see
    :class:`~dvbench.harness.work.Shards`), private to this valuator, data, model and
    config (up to the valuator's ``derived`` keys); ``None`` keeps everything in memory.
    ``tracked`` is the spec's pattern of tracked linear layers for gradient methods (see
    :func:`~dvbench.harness.lm.grads.tracked_linears`); ``None``: the default layers.
    ``executor`` runs the valuator's independent units of work (its shards of candidates);
    ``log`` takes one-line notices (a damaged work file computed again).
    """

    candidates: tuple[Example, ...]
    anchors: tuple[Example, ...]
    model: ModelRef
    seed: int = 0
    template: Template = Template()
    progress: Progress = field(default_factory=Progress, compare=False)
    work: Path | None = None
    tracked: str | None = None
    executor: Executor = field(default_factory=LocalExecutor, compare=False)
    log: Callable[[str], None] = field(default=print, compare=False)


@dataclass(frozen=True)
class TrainingTask:
    """What a trainer fine-tunes: ``model`` on ``examples`` (each in the template's training
    form, the same ``L(θ, z)`` the valuators use).

    ``out`` is the folder the fine-tuned model is saved to; ``work`` holds the trainer's
    checkpoints, private to this model, data and config, so an interrupted training resumes;
    ``log`` takes one-line notices (a damaged checkpoint not resumed from).
    """

    model: ModelRef
    examples: tuple[Example, ...]
    out: Path
    seed: int = 0
    template: Template = Template()
    progress: Progress = field(default_factory=Progress, compare=False)
    work: Path | None = None
    log: Callable[[str], None] = field(default=print, compare=False)


@dataclass(frozen=True)
class EvalTask:
    """What an evaluator measures: ``model`` (fine-tuned) on ``examples``, against ``base`` (the
    model it started from), with the template every role shares.

    ``executor`` runs the evaluator's own units of work (an evaluator that sets ``hands_units``);
    a unit that may run on another machine loads the fine-tuned model from
    ``model_folder.path()`` (``model``'s folder wherever the unit runs; None: ``model`` as it is)
    and the base model from ``base``.
    """

    model: ModelRef
    base: ModelRef
    examples: tuple[Example, ...]
    seed: int = 0
    template: Template = Template()
    progress: Progress = field(default_factory=Progress, compare=False)
    executor: Executor = field(default_factory=LocalExecutor, compare=False)
    model_folder: Folder | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Scores:
    """One score per candidate (higher = more valuable), optionally per anchor (N x M).

    ``valuator``, ``version`` and ``config`` record what produced the scores. ``details`` holds
    the raw arrays the scores were aggregated from (saved beside them, so every aggregate can be
    derived again); ``stats`` holds counts worth reporting (ties, truncations).
    """

    candidate_ids: tuple[str, ...]
    values: np.ndarray
    valuator: str
    version: str
    config: Mapping[str, Any]
    per_anchor: np.ndarray | None = None
    anchor_ids: tuple[str, ...] | None = None
    details: Mapping[str, np.ndarray] = field(default_factory=dict)
    stats: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        details = {name: np.array(array) for name, array in self.details.items()}
        for array in details.values():
            array.setflags(write=False)
        object.__setattr__(self, "details", MappingProxyType(details))
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))
        ids = tuple(self.candidate_ids)
        object.__setattr__(self, "candidate_ids", ids)
        values = _frozen_array(self.values, f"scores of {self.valuator}", (len(ids),))
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        if len(set(ids)) != len(ids):
            raise ValueError(f"scores of {self.valuator} repeat a candidate id")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"{self.valuator} gave {bad.size} non-finite score(s); first: candidate "
                f"{ids[bad[0]]!r} = {values[bad[0]]}"
            )
        if self.per_anchor is not None:
            if self.anchor_ids is None:
                raise ValueError(f"{self.valuator} gave a per-anchor matrix without anchor ids")
            anchor_ids = tuple(self.anchor_ids)
            object.__setattr__(self, "anchor_ids", anchor_ids)
            matrix = _frozen_array(
                self.per_anchor, f"per-anchor scores of {self.valuator}", (len(anchor_ids), len(ids))
            )
            if not np.isfinite(matrix).all():
                raise ValueError(f"{self.valuator} gave non-finite per-anchor scores")
            object.__setattr__(self, "per_anchor", matrix)

    def top(self, count: int) -> tuple[str, ...]:
        """The ids of the ``count`` best candidates, best first (ties by id: :func:`best_first`)."""
        return tuple(self.candidate_ids[i] for i in best_first(self.candidate_ids, self.values)[:count])


@dataclass(frozen=True)
class Selection:
    """Named training subsets chosen from one valuator's scores, each a tuple of candidate ids."""

    subsets: Mapping[str, tuple[str, ...]]
    selector: str
    version: str
    config: Mapping[str, Any]

    def __post_init__(self) -> None:
        subsets = {name: tuple(ids) for name, ids in self.subsets.items()}
        object.__setattr__(self, "subsets", MappingProxyType(subsets))
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


@dataclass(frozen=True)
class TrainedModel:
    """A fine-tuned model: its checkpoint, what it started from and what trained it."""

    model: ModelRef
    base: ModelRef
    trainer: str
    version: str
    config: Mapping[str, Any]
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one model on an eval set, overall and per example subset; ``files``: JSON
    documents kept beside the metrics, by file name (win_rate's responses and judgements)."""

    metrics: Mapping[str, float]
    evaluator: str
    version: str
    config: Mapping[str, Any]
    by_subset: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    files: Mapping[str, Any] = field(default_factory=dict)
