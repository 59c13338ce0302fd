"""The ground-truth stage: counterfactual retraining (docs/definitions.md § Ground truth).

- **The retrain bank.** K subsets ``S_k`` of ``round(α·M)`` candidates, drawn uniformly without
  replacement by a generator seeded with ``(spec seed, k)``, each fine-tuned from the base
  model by the ``ground_truth.trainer`` entry's trainer and options.
- **Removal retrains.** For each valuator and each fraction q: the pool without the valuator's
  ``round(q·M)`` best candidates (ties by id); and R seeded random removals of the same size
  (generator ``(spec seed, r, size)``), shared by every valuator.

Each fine-tune is a unit of work of the training stage (content-named under ``models/``, so a
subset trained once serves every later run and every valuator), and so is each measurement:
``L(θ, x)`` of every anchor under each model, and under the base model (a unit reads its
model from the folder the executor ships, never from the output folder).

    ground_truth/losses/<model>.metrics.json   one model's per-anchor losses (the anchors' order)
    ground_truth/losses.parquet                 model, kind (base | subset | removal | random),
                                                k, valuator, q, anchor_id, loss
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from dvbench.harness.artifacts import fingerprint
from dvbench.harness.executor import Folder
from dvbench.harness.ground_truth_tables import Bank, Removals
from dvbench.harness.records import Example, ModelRef, Scores
from dvbench.harness.stages import training
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data
from dvbench.harness.stages.model import Model

BASE = "base"
SCHEMA = {"model": pl.String, "kind": pl.String, "k": pl.Int64, "valuator": pl.String, "q": pl.Float64,
          "anchor_id": pl.String, "loss": pl.Float64}


@dataclass(frozen=True)
class Retrain:
    """One model the ground truth measures: which kind, and what it left out or kept."""

    kind: str  # subset | removal | random
    name: str
    k: int | None = None  # the subset's or the random removal's index
    valuator: str | None = None
    q: float | None = None


@dataclass(frozen=True)
class Measured:
    """Every retrained model's per-anchor losses (rows follow ``retrains``), and the base model's."""

    anchor_ids: tuple[str, ...]
    subsets: np.ndarray  # K x M, bool, candidate order
    retrains: tuple[Retrain, ...]
    losses: np.ndarray  # len(retrains) x N
    base_losses: np.ndarray  # N

    def of(self, kind: str) -> tuple[list[Retrain], np.ndarray]:
        rows = [i for i, r in enumerate(self.retrains) if r.kind == kind]
        return [self.retrains[i] for i in rows], self.losses[rows]

    def bank(self, candidate_ids: tuple[str, ...]) -> Bank:
        """The retrain bank, as the leaderboard's LDS takes it."""
        return Bank(candidate_ids, self.anchor_ids, self.subsets, self.of("subset")[1], self.base_losses)

    def removals(self) -> Removals | None:
        """The removal retrains, as the leaderboard's removal table takes them; None without any."""
        removed, losses = self.of("removal")
        if not removed:
            return None
        randoms, random_losses = self.of("random")
        by_q = {q: np.array([row for r, row in zip(randoms, random_losses) if r.q == q])
                for q in sorted({r.q for r in randoms})}
        return Removals(self.anchor_ids, {(r.valuator, r.q): row for r, row in zip(removed, losses)}, by_q)


def subsets(seed: int, count: int, size: int, pool: int) -> np.ndarray:
    """The bank's K subsets as a K x M mask: subset k drawn by ``default_rng([seed, k])``."""
    mask = np.zeros((count, pool), dtype=bool)
    for k in range(count):
        mask[k, np.random.default_rng([seed, k]).choice(pool, size, replace=False)] = True
    return mask


def random_removal(seed: int, r: int, size: int, pool: int) -> np.ndarray:
    """Random removal r of ``size`` candidates, as a mask of the candidates removed."""
    mask = np.zeros(pool, dtype=bool)
    mask[np.random.default_rng([seed, r, size]).choice(pool, size, replace=False)] = True
    return mask


def measure(ctx: RunContext, data: Data, scores: dict[str, Scores], model: Model) -> Measured:
    """Fine-tune every subset and removal, then measure every anchor under every model."""
    truth, candidates = ctx.spec.settings.ground_truth, data.candidates
    use = ctx.spec.ground_truth_trainer()
    pool = len(candidates)
    bank = subsets(ctx.seed, truth.subsets, round(truth.fraction * pool), pool)
    planned: list[tuple[Retrain, training.FineTune]] = []

    def plan(kind: str, kept: np.ndarray, label: str, **where) -> None:
        unit = training.unit(ctx, use, model, tuple(c for c, keep in zip(candidates, kept) if keep), label)
        planned.append((Retrain(kind, unit.name, **where), unit))

    for k in range(truth.subsets):
        plan("subset", bank[k], f"bank subset {k + 1}/{truth.subsets}", k=k)
    ids = tuple(c.id for c in candidates)
    for q in truth.removal:
        size = round(q * pool)
        for label, valued in scores.items():
            top = set(valued.top(size))
            plan("removal", np.array([i not in top for i in ids]), f"without {label}'s top {q:.0%}", valuator=label, q=q)
        for r in range(truth.random_removals):
            plan("random", ~random_removal(ctx.seed, r, size, pool), f"random removal {r + 1} of {q:.0%}", k=r, q=q)
    units = {unit.name: unit for _, unit in planned}
    training.fine_tune(ctx, model, list(units.values()), what="retraining")
    names = [BASE, *units]
    losses = _losses(ctx, data.anchors, model, names)
    retrains = tuple(r for r, _ in planned)
    measured = Measured(tuple(a.id for a in data.anchors), bank, retrains,
                        np.array([losses[r.name] for r in retrains]).reshape(len(retrains), len(data.anchors)),
                        losses[BASE])
    ctx.store.save_frame("ground_truth/losses", {"models": sorted(units), "anchors": fingerprint(data.anchors)},
                         _frame(measured))
    return measured


def _losses(ctx: RunContext, anchors: tuple[Example, ...], model: Model, names: list[str]) -> dict[str, np.ndarray]:
    """``L(θ, x)`` of every anchor under each named model (``base``: the base model), each a unit
    of work, saved as it is done and reused while the model and the anchors are unchanged."""
    base = model.ref
    producer = {"anchors": fingerprint(anchors), "template": asdict(ctx.spec.template), "base": model.identity}
    found = {}
    for name in names:
        saved, _ = ctx.store.load_json(f"ground_truth/losses/{name}", {**producer, "model": name})
        if saved is not None:
            found[name] = np.array(saved, dtype=np.float64)
    pending = [name for name in names if name not in found]
    template = ctx.spec.template

    def run(folder: Folder | None) -> list[float]:
        """The anchors' losses under the model in ``folder`` (None: the base model)."""
        from dvbench.harness.lm.losses import example_losses

        ref = base if folder is None else ModelRef(str(folder.path()), dtype=base.dtype, threads=base.threads,
                                                   device=base.device)
        return example_losses(ref, anchors, template).tolist()

    folders = [None if name == BASE else ctx.executor.ship(ctx.store.path(f"models/{name}")) for name in pending]
    with ctx.progress.task("ground-truth losses", len(pending), "models") as advance:
        for name, values in zip(pending, ctx.executor.map(run, folders)):
            ctx.store.save_json(f"ground_truth/losses/{name}", {**producer, "model": name}, values)
            found[name] = np.array(values, dtype=np.float64)
            advance(1)
    return found


def _frame(measured: Measured) -> pl.DataFrame:
    rows = [{"model": BASE, "kind": BASE, "k": None, "valuator": None, "q": None, "anchor_id": a, "loss": float(v)}
            for a, v in zip(measured.anchor_ids, measured.base_losses)]
    rows += [{"model": r.name, "kind": r.kind, "k": r.k, "valuator": r.valuator, "q": r.q, "anchor_id": a,
              "loss": float(v)} for r, row in zip(measured.retrains, measured.losses)
             for a, v in zip(measured.anchor_ids, row)]
    return pl.DataFrame(rows, schema=SCHEMA)
