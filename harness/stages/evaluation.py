"""The evaluation stage: every evaluator on every fine-tuned model, one unit of work per
(evaluator, model), each reused while its producer is unchanged.

    evaluations/<evaluator>/<model>.metrics.json   an evaluator's metrics for one model
    evaluations/<evaluator>/<model>.<file>         the JSON files it keeps beside them (win_rate:
                                       model_outputs.json, reference_outputs.json, annotations.json)
    evaluations/<evaluator>.parquet    trainer, selection, valuator, subset, model, eval_subset,
                                       metric, value (eval_subset "all": the whole eval set)

A unit reaches its fine-tuned model through the executor (``ship``: on Ray a copy on its
worker, sent once per model), never through the output folder. An evaluator that hands its own
units (``hands_units``: win_rate) runs here instead, with the executor in its task.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dvbench.harness.artifacts import fingerprint
from dvbench.harness.executor import Executor, Folder, LocalExecutor
from dvbench.harness.records import EvalTask, Example, ModelRef
from dvbench.harness.spec import Use
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.model import Model
from dvbench.harness.stages.training import Trained, base_inputs, label

SCHEMA = {"trainer": pl.String, "selection": pl.String, "valuator": pl.String, "subset": pl.String,
          "model": pl.String, "eval_subset": pl.String, "metric": pl.String, "value": pl.Float64}


@dataclass(frozen=True)
class Evaluation:
    """One unit of work: ``use``'s evaluator on the fine-tuned ``models/<model>``."""

    use: Use
    model: str
    producer: dict
    label: str = ""  # what the model was trained on, in progress lines

    @property
    def artifact(self) -> str:
        return f"evaluations/{self.use.label}/{self.model}"


def evaluate(ctx: RunContext, eval_set: tuple[Example, ...], trained: Trained, model: Model) -> dict[str, pl.DataFrame]:
    """Every evaluator on every fine-tuned model: one long frame per evaluator."""
    models = sorted({name for names in trained.values() for name in names.values()})
    uses: dict[str, list[str]] = {}
    for names in trained.values():
        for (_, valuator, subset), name in names.items():
            uses.setdefault(name, []).append(f"{valuator} {subset}")
    units = [Evaluation(use, name, {**use.plugin.provenance(), **base_inputs(ctx, model), "model": name,
                                    "eval": fingerprint(eval_set)}, f"{use.label} of {label(uses[name])}")
             for use in ctx.spec.evaluation.values() for name in models]
    results = _measure(ctx, eval_set, model, units)
    frames = {}
    for use in ctx.spec.evaluation.values():
        rows = [{"trainer": trainer, "selection": selection, "valuator": valuator, "subset": subset, "model": name,
                 "eval_subset": eval_subset, "metric": metric, "value": value}
                for trainer, names in trained.items()
                for (selection, valuator, subset), name in names.items()
                for eval_subset, metrics in results[(use.label, name)].items()
                for metric, value in metrics.items()]
        frame = pl.DataFrame(rows, schema=SCHEMA)
        ctx.store.save_frame(f"evaluations/{use.label}", {"models": models}, frame)
        frames[use.label] = frame
    return frames


def _measure(ctx: RunContext, eval_set: tuple[Example, ...], model: Model,
             units: list[Evaluation]) -> dict[tuple[str, str], dict]:
    """``{(evaluator label, model): {"all": metrics, <subset>: metrics}}``: saved ones reused,
    the rest measured by the executor, each saved as soon as it is done."""
    results = {}
    for unit in units:
        saved, why = ctx.store.load_json(unit.artifact, unit.producer)
        if saved is not None:
            results[(unit.use.label, unit.model)] = saved
        elif why != "not computed yet":
            ctx.log(f"{unit.artifact}: measuring again, {why}")
    pending = [unit for unit in units if (unit.use.label, unit.model) not in results]
    if results:
        ctx.log(f"evaluation: {len(results)} of {len(units)} evaluations already measured, reused")
    folders = {name: ctx.executor.ship(ctx.store.path(f"models/{name}")) for name in sorted({u.model for u in pending})}
    base, seed, template, progress = model.ref, ctx.seed, ctx.spec.template, ctx.progress

    def run(unit: Evaluation, folder: Folder, executor: Executor = LocalExecutor(),
            source: Path | None = None) -> tuple[dict, dict]:
        """``unit`` measured, as a unit of work reading its model from ``folder`` where it runs; or
        here (an evaluator that hands its own units), reading it from ``source`` and handing
        ``folder`` to its units on ``executor``."""
        advance(0, unit.label)
        tuned = ModelRef(str(source or folder.path()), dtype=base.dtype, threads=base.threads, device=base.device)
        task = EvalTask(tuned, base, eval_set, seed=seed, template=template, progress=progress, executor=executor,
                        model_folder=folder)
        result = unit.use.plugin.evaluate(task)
        return {"all": dict(result.metrics), **{k: dict(v) for k, v in result.by_subset.items()}}, dict(result.files)

    here = [unit for unit in pending if unit.use.plugin.hands_units]  # they hand their own units to the executor
    units_of_work = [unit for unit in pending if not unit.use.plugin.hands_units]
    with ctx.progress.task("evaluation", len(pending), "evaluations") as advance:
        measured = zip(units_of_work, ctx.executor.map(lambda item: run(*item),
                                                       [(unit, folders[unit.model]) for unit in units_of_work]))
        driven = ((unit, run(unit, folders[unit.model], ctx.executor, ctx.store.path(f"models/{unit.model}")))
                  for unit in here)
        for unit, (metrics, files) in itertools.chain(measured, driven):
            ctx.store.save_json(unit.artifact, unit.producer, metrics, beside=files)
            results[(unit.use.label, unit.model)] = metrics
            advance(1)
    return results
