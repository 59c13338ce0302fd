"""The training stage: every trainer fine-tunes the base model on every selected subset.

For each training entry, selection entry, valuator and subset (a score bin, a top-k), one
fine-tune: an independent unit of work handed to the executor. A model is named after what
produced it (trainer, config, base model, template, seed, the subset's examples), so equal
subsets (a random selection is the same for every valuator) are trained once, and a finished
model is reused by the next run:

    models/<trainer>-<key>/            the fine-tuned model (save_pretrained), complete or absent
    models/<trainer>-<key>.json        its producer; .metrics.json: steps and losses
    work/<trainer>-<key>/              the trainer's checkpoints; an interrupted training resumes
    training/<trainer>.parquet         selection, valuator, subset, model, examples, steps, losses

A fine-tune writes into the folder and the scratch folder its executor gives it
(:meth:`~dvbench.harness.executor.Executor.map_into`): these two locally; on Ray, folders of its
worker, the model's files written here by the driver (the checkpoints stay on the worker).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import polars as pl

from dvbench.harness.artifacts import canonical, fingerprint
from dvbench.harness.records import Example, Selection, TrainingTask
from dvbench.harness.spec import Use
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.model import Model

SCHEMA = {"selection": pl.String, "valuator": pl.String, "subset": pl.String, "model": pl.String,
          "examples": pl.Int64, "steps": pl.Int64, "loss_first": pl.Float64, "loss_last": pl.Float64}
Trained = dict[str, dict[tuple[str, str, str], str]]  # trainer label -> (selection, valuator, subset) -> model


@dataclass(frozen=True)
class FineTune:
    """One unit of work: ``use``'s trainer on ``examples``, saved as ``models/<name>``."""

    use: Use
    name: str
    producer: dict
    examples: tuple[Example, ...]
    label: str = ""  # what it is for, in progress lines: "icp >0.8", "without icp's top 20%"


def base_inputs(ctx: RunContext, model: Model) -> dict:
    """What every trained model (and every evaluation of one) is derived from besides its trainer."""
    return {"model": model.identity, "template": asdict(ctx.spec.template), "seed": ctx.seed}


def train(ctx: RunContext, candidates: tuple[Example, ...], selections: dict[str, dict[str, Selection]],
          model: Model) -> Trained:
    """Fine-tune on every selected subset: ``{trainer label: {(selection, valuator, subset): model name}}``."""
    by_id = {c.id: c for c in candidates}
    units: dict[str, FineTune] = {}
    names: Trained = {}
    uses: dict[str, list[str]] = {}  # model -> the (valuator subset)s it is trained for
    for use in ctx.spec.training.values():
        names[use.label], empty = {}, {}
        for selection in ctx.spec.trained_selections(use):
            for valuator, chosen in selections[selection].items():
                for subset, ids in chosen.subsets.items():
                    if not ids:
                        empty.setdefault(f"{selection}/{subset}", []).append(valuator)
                        continue
                    planned = unit(ctx, use, model, tuple(by_id[i] for i in ids))
                    units.setdefault(planned.name, planned)
                    uses.setdefault(planned.name, []).append(f"{valuator} {subset}")
                    names[use.label][(selection, valuator, subset)] = planned.name
        for subset, valuators in empty.items():
            ctx.log(f"training/{use.label}: {subset} is empty for {', '.join(valuators)}; not trained")
    metrics = fine_tune(ctx, model, [replace(u, label=label(uses[name])) for name, u in units.items()])
    for use in ctx.spec.training.values():
        rows = [{"selection": selection, "valuator": valuator, "subset": subset, "model": name,
                 "examples": len(units[name].examples), **{k: metrics[name].get(k) for k in
                                                           ("steps", "loss_first", "loss_last")}}
                for (selection, valuator, subset), name in names[use.label].items()]
        ctx.store.save_frame(f"training/{use.label}", {"models": sorted(set(names[use.label].values()))},
                             pl.DataFrame(rows, schema=SCHEMA))
    return names


def label(uses: list[str]) -> str:
    """One model's uses in a progress line: the first, and how many more share the model."""
    return uses[0] + (f" (and {len(uses) - 1} more)" if len(uses) > 1 else "")


def unit(ctx: RunContext, use: Use, model: Model, examples: tuple[Example, ...], label: str = "") -> FineTune:
    """The fine-tune of ``examples`` by ``use``'s trainer, named after everything that produces it."""
    producer = {**use.plugin.provenance(), **base_inputs(ctx, model), "examples": fingerprint(examples),
                "count": len(examples)}
    name = f"{use.label}-{hashlib.sha256(canonical(producer).encode()).hexdigest()[:16]}"
    return FineTune(use, name, producer, examples, label)


def fine_tune(ctx: RunContext, model: Model, units: list[FineTune], what: str = "training") -> dict[str, dict]:
    """Every unit's metrics: saved ones reused, the rest trained by the executor, each saved as
    soon as it is done."""
    metrics = {}
    for unit in units:
        saved, why = ctx.store.load_json(f"models/{unit.name}", unit.producer)
        if saved is not None:
            metrics[unit.name] = saved
        elif why != "not computed yet":
            ctx.log(f"models/{unit.name}: training again, {why}")
    pending = [unit for unit in units if unit.name not in metrics]
    if metrics:
        ctx.log(f"{what}: {len(metrics)} of {len(units)} models already trained, reused")
    ref, seed, template, progress, log = model.ref, ctx.seed, ctx.spec.template, ctx.progress, ctx.log
    folders = [(ctx.store.path(f"models/{unit.name}"), ctx.store.path(f"work/{unit.name}")) for unit in pending]
    with ctx.progress.task(what, len(pending), "models") as advance:

        def run(unit: FineTune, out, work) -> dict:
            advance(0, unit.label)
            task = TrainingTask(ref, unit.examples, out, seed=seed, template=template, progress=progress, work=work,
                                log=log)
            return dict(unit.use.plugin.train(task).metrics)

        for unit, result in zip(pending, ctx.executor.map_into(run, pending, folders)):
            ctx.store.save_json(f"models/{unit.name}", unit.producer, result, folder=True)
            metrics[unit.name] = result
            advance(1)
    return metrics
