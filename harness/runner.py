"""Runs a validated spec into one output folder, stage by stage (:mod:`dvbench.harness.stages`:
data, anchors (when built by K-Means), model, valuation, selection, training, evaluation, leaderboard), and writes ``run.json``:
the resolved spec, every plugin with its version and distribution, the model, where each role
ran, the token report, the seconds each stage took, each valuator's seconds and peak memory, the
package versions, the git commits, the hardware, and when it started and finished (README.md
lists the keys). Each stage's module docstring lists the artifacts it writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dvbench.harness import provenance
from dvbench.harness.artifacts import ArtifactStore, json_text, write_text_atomic
from dvbench.harness.executor import Executor, LocalExecutor
from dvbench.harness.lock import exclusive
from dvbench.harness.memory import PeakMemory
from dvbench.harness.progress import Progress
from dvbench.harness.records import Scores, Selection
from dvbench.harness.spec import Spec
from dvbench.harness.stages import evaluation, ground_truth, leaderboard, selection, training, valuation
from dvbench.harness.stages.anchors import build_anchors, built_anchors
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data, load_data
from dvbench.harness.stages.model import Model, devices, placement, prepare_model


@dataclass
class RunResult:
    """What a run produced, in memory, plus where it lies on disk."""

    out: Path
    model: Model | None = None
    scores: dict[str, Scores] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per valuator
    peaks: dict[str, PeakMemory] = field(default_factory=dict)  # per valuator
    selections: dict[str, dict[str, Selection]] = field(default_factory=dict)
    trained: training.Trained = field(default_factory=dict)
    evaluations: dict[str, pl.DataFrame] = field(default_factory=dict)
    truth: ground_truth.Measured | None = None
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Runner:
    """Runs one spec into one output folder; ``log`` receives one-line notices."""

    def __init__(self, spec: Spec, out: Path | None = None, progress: Progress | None = None, log=print,
                 executor: Executor | None = None):
        out = Path(out or spec.settings.output_dir or Path("runs") / spec.name)
        progress = progress or Progress()
        self.ctx = RunContext(spec, ArtifactStore(out), progress, log, executor or _executor(spec, log, progress))

    @property
    def out(self) -> Path:
        return self.ctx.store.root

    def run(self) -> RunResult:
        """Every stage the spec asks for, then run.json."""
        with self._owned():
            return self._run()

    def scores(self) -> dict[str, Scores]:
        """The data, model and valuation stages alone: every valuator's scores (as ``dvbench check
        --golden`` needs them)."""
        with self._owned():
            return self._value()[0].scores

    @contextmanager
    def _owned(self) -> Iterator[None]:
        """The output folder, locked for this run and cleared of what killed writes left."""
        with exclusive(self.out):
            removed = self.ctx.store.clean()
            if removed:
                self.ctx.log(f"{self.out}: removed {removed} temporary file(s) left by an interrupted run")
            try:
                yield
            finally:
                self.ctx.executor.close()

    def _run(self) -> RunResult:
        started = time.time()
        self._expect(RunResult(self.out))
        result, data = self._value()
        ctx = self.ctx
        if ctx.spec.selection:
            with self._timed(result, "selection"):
                result.selections = selection.select(ctx, result.scores)
        if ctx.spec.training:
            self._expect(result)
            with self._timed(result, "training"):
                result.trained = training.train(ctx, data.candidates, result.selections, result.model)
        if ctx.spec.evaluation:
            self._expect(result)
            with self._timed(result, "evaluation"):
                result.evaluations = evaluation.evaluate(ctx, data.eval, result.trained, result.model)
        if ctx.spec.settings.ground_truth is not None:
            with self._timed(result, "ground truth"):
                result.truth = ground_truth.measure(ctx, data, result.scores, result.model)
        with self._timed(result, "leaderboard"):
            result.tables = leaderboard.tables(ctx, data, result.scores, result.selections, result.evaluations,
                                               result.truth)
        self._write_run_json(result, started)
        return result

    def _value(self) -> tuple[RunResult, Data]:
        result = RunResult(self.out)
        device = placement(self.ctx.spec)  # an unavailable GPU stops the run before any work
        with self._timed(result, "data"):
            data = load_data(self.ctx.spec, self.ctx.log)
        if built_anchors(self.ctx.spec) is not None:
            with self._timed(result, "anchors"):
                data = build_anchors(self.ctx, data, device)
        with self._timed(result, "model"):
            result.model = prepare_model(self.ctx, data, device)
        with self._timed(result, "valuation"):
            result.scores, result.seconds, result.peaks = valuation.value(self.ctx, data, result.model)
        return result, data

    def _expect(self, result: RunResult) -> None:
        """Tell progress the work of the stages to come, as far as ``result`` so far shows it (a
        count of fine-tunes before deduplication: at most)."""
        spec, done = self.ctx.spec, result.timings

        def expect(task: str, units: int | None, stage: str, like: str | None = None) -> None:
            if stage not in done:
                self.ctx.progress.expect(task, units, like)

        expect("valuation", len(spec.valuators), "valuation")
        fine_tunes = None
        if result.selections:
            fine_tunes = sum(1 for use in spec.training.values() for name in spec.trained_selections(use)
                             for chosen in result.selections[name].values() for ids in chosen.subsets.values() if ids)
        if result.trained:
            fine_tunes = len({name for names in result.trained.values() for name in names.values()})
        if spec.training:
            expect("training", fine_tunes, "training")
        if spec.evaluation:
            expect("evaluation", None if fine_tunes is None else fine_tunes * len(spec.evaluation), "evaluation")
        truth = spec.settings.ground_truth
        if truth is not None:
            retrains = truth.subsets + len(truth.removal) * (len(spec.valuators) + truth.random_removals)
            expect("retraining", retrains, "ground truth", like="training" if spec.training else None)
            expect("ground-truth losses", retrains + 1, "ground truth")

    @contextmanager
    def _timed(self, result: RunResult, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        result.timings[stage] = round(time.perf_counter() - start, 3)

    def _write_run_json(self, result: RunResult, started: float) -> None:
        spec = self.ctx.spec
        plugins = {f"{section}.{u.label}": {"plugin": u.plugin.name, "version": u.plugin.version,
                                            "class": f"{type(u.plugin).__module__}.{type(u.plugin).__qualname__}",
                                            "distribution": provenance.distribution(type(u.plugin))}
                   for section, uses in spec.sections().items() for u in uses.values()}
        distributions = tuple(p["distribution"]["name"] for p in plugins.values() if p["distribution"])
        record = {
            "spec_file": str(spec.source),
            "spec": spec.resolved(),
            "seed": spec.settings.seed,
            "overrides": list(spec.overrides),
            "limit": spec.limit,
            "versions": provenance.versions(distributions),
            "git": {"dvbench": provenance.git(Path(provenance.__file__)), "spec": provenance.git(spec.source)},
            "hardware": provenance.hardware(),
            "plugins": plugins,
            "model": result.model.identity,
            "devices": devices(spec, result.model.ref.device),
            "tokens": result.model.tokens,
            "timings_s": result.timings,
            "valuator_seconds": result.seconds,
            "valuator_peak_rss_mb": {label: peak.rss_mb for label, peak in result.peaks.items()},
            "valuator_peak_cuda_allocated_mb": {label: peak.cuda_allocated_mb for label, peak in result.peaks.items()},
            "started": _timestamp(started),
            "finished": _timestamp(time.time()),
        }
        write_text_atomic(self.out / "run.json", json_text(record, indent=2))


def _executor(spec: Spec, log, progress: Progress) -> Executor:
    """The spec's ``execution.backend``: this process, or Ray workers (ray imported when used)."""
    execution = spec.settings.execution
    if execution.backend == "local":
        return LocalExecutor()
    from dvbench.harness.ray_executor import RayExecutor

    return RayExecutor(execution, log, progress)


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
