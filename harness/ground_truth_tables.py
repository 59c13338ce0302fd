"""Leaderboard tables of the ground truth (counterfactual retraining), pure polars frames of
the retrain stage's records; the metrics are :mod:`dvbench.harness.ground_truth`'s.

Every table carries a seeded percentile bootstrap interval (``ci_low``, ``ci_high``;
:mod:`dvbench.harness.intervals`) at ``level`` over ``B`` resamples (0: none, null) of the
metric's own unit: anchors for per-anchor LDS, Recall@k and MRR (means over anchors); retrained
subsets for global LDS; random removals for the removal effect. Undefined values are null.

- ``lds``: one ``per_anchor`` row per valuator with a per-anchor matrix (mean over anchors of
  their LDS; ``anchors`` counts those with a defined LDS) and one ``global`` row for every
  valuator (aggregate scores against the anchors' mean loss): the two kinds are labelled and
  never mixed. Higher is better (−1..1).
- ``removal``: per valuator and fraction q, ``removed`` = the anchors' mean loss of the model
  retrained without the valuator's top q (nats), ``effect`` = ``removed − random_mean``, where
  ``random_mean`` is the mean over the R random removals of their anchors' mean loss and
  ``random_low``, ``random_high`` are the central ``level`` percentiles of those R mean losses
  (the random band). Higher effect is better.
- ``fact_attribution``: long form, per valuator with a per-anchor matrix, ``metric``
  ``recall@k`` for each k and ``mrr``, over the anchors with a supporting set. Higher is better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from dvbench.harness import ground_truth, intervals, resampled
from dvbench.harness.intervals import finite_or_none
from dvbench.harness.records import Scores

LDS_SCHEMA = {"valuator": pl.String, "kind": pl.String, "lds": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "anchors": pl.Int64, "subsets": pl.Int64}
REMOVAL_SCHEMA = {"valuator": pl.String, "q": pl.Float64, "removed": pl.Float64, "effect": pl.Float64,
                  "ci_low": pl.Float64, "ci_high": pl.Float64, "random_mean": pl.Float64,
                  "random_low": pl.Float64, "random_high": pl.Float64}
FACT_SCHEMA = {"valuator": pl.String, "metric": pl.String, "k": pl.Int64, "value": pl.Float64,
               "ci_low": pl.Float64, "ci_high": pl.Float64, "anchors": pl.Int64}


@dataclass(frozen=True)
class Bank:
    """The retrain bank: ``subsets`` (``K × M`` bool, candidate order) were each fine-tuned on;
    ``losses`` (``K × N``) is every anchor's ``L(θ_k, x)``, ``base_losses`` (``N,``) the base
    model's, in nats."""

    candidate_ids: tuple[str, ...]
    anchor_ids: tuple[str, ...]
    subsets: np.ndarray
    losses: np.ndarray
    base_losses: np.ndarray

    def __post_init__(self) -> None:
        m, n = len(self.candidate_ids), len(self.anchor_ids)
        subsets, losses = np.asarray(self.subsets), np.asarray(self.losses)
        if subsets.ndim != 2 or subsets.shape[1] != m or losses.shape != (subsets.shape[0], n) \
                or np.shape(self.base_losses) != (n,):
            raise ValueError(f"a bank of {m} candidates and {n} anchors needs K x {m} subsets, K x {n} losses and "
                             f"{n} base losses; got {subsets.shape}, {losses.shape}, {np.shape(self.base_losses)}")


@dataclass(frozen=True)
class Removals:
    """Retraining without candidates: ``removed[(valuator, q)]`` the anchors' losses (``N,``) of
    the model trained without that valuator's top q; ``random[q]`` (``R × N``) those of the R
    seeded random removals of the same size, shared by every valuator."""

    anchor_ids: tuple[str, ...]
    removed: Mapping[tuple[str, float], np.ndarray]
    random: Mapping[float, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.anchor_ids)
        for (label, q), losses in self.removed.items():
            if q not in self.random:
                raise ValueError(f"removal of {label!r}'s top {q} has no random removals of fraction {q}")
            if np.shape(losses) != (n,):
                raise ValueError(f"removal of {label!r}'s top {q} has losses of shape {np.shape(losses)}; expected ({n},)")
        for q, losses in self.random.items():
            if np.ndim(losses) != 2 or np.shape(losses)[1] != n or not len(losses):
                raise ValueError(f"random removals of fraction {q} have losses of shape {np.shape(losses)}; "
                                 f"expected R x {n}, R >= 1")


def _mean_interval(values: np.ndarray, level: float, B: int, seed: int) -> tuple[float | None, float | None]:
    """Interval of the mean of ``values`` resampling its entries."""
    total = len(values)
    low, high = intervals.bootstrap_counts(lambda counts: counts @ values / total, total, B=B, seed=seed, level=level)
    return finite_or_none(low), finite_or_none(high)


def _matrix(label: str, scores: Scores, anchor_ids: tuple[str, ...]) -> np.ndarray:
    if scores.anchor_ids != anchor_ids:
        raise ValueError(f"valuator {label!r} scored other anchors than the ground truth measured")
    return np.asarray(scores.per_anchor, dtype=np.float64)


def _check_pool(label: str, scores: Scores, candidate_ids: tuple[str, ...]) -> None:
    if tuple(scores.candidate_ids) != tuple(candidate_ids):
        raise ValueError(f"valuator {label!r} scored another candidate pool (or order) than the ground truth's")


def lds(scores: Mapping[str, Scores], bank: Bank, *, level: float = 0.95, B: int = 1000, seed: int = 0) -> pl.DataFrame:
    """LDS per valuator: ``per_anchor`` (valuators with a matrix; interval over anchors) and
    ``global`` (every valuator; interval over subsets)."""
    rows = []
    subsets, losses = np.asarray(bank.subsets, dtype=bool), np.asarray(bank.losses, dtype=np.float64)
    target = -losses.mean(1)
    for label, s in scores.items():
        _check_pool(label, s, bank.candidate_ids)
        if s.per_anchor is not None:
            per_anchor = ground_truth.lds_per_anchor(_matrix(label, s, bank.anchor_ids),
                                                     subsets, losses)
            defined = per_anchor[np.isfinite(per_anchor)]
            low, high = _mean_interval(defined, level, B, seed)
            rows.append({"valuator": label, "kind": "per_anchor",
                         "lds": finite_or_none(defined.mean()) if len(defined) else None, "ci_low": low, "ci_high": high, "anchors": len(defined), "subsets": len(subsets)})
        predicted = subsets @ np.asarray(s.values, dtype=np.float64)
        low, high = intervals.bootstrap_counts(lambda counts: resampled.spearman(predicted, target, counts),
                                               len(subsets), B=B, seed=seed, level=level)
        rows.append({"valuator": label, "kind": "global",
                     "lds": finite_or_none(ground_truth.global_lds(s.values, subsets, losses)),
                     "ci_low": finite_or_none(low), "ci_high": finite_or_none(high), "anchors": len(bank.anchor_ids), "subsets": len(subsets)})
    return pl.DataFrame(rows, schema=LDS_SCHEMA)


def removal(removals: Removals, *, level: float = 0.95, B: int = 1000, seed: int = 0) -> pl.DataFrame:
    """The removal effect per valuator and q (in the order given), its interval over the random
    removals, and the random band."""
    rows = []
    for (label, q), losses in removals.removed.items():
        random = np.asarray(removals.random[q], dtype=np.float64)
        removed, means = float(np.mean(losses)), random.mean(1)
        low, high = intervals.bootstrap_counts(lambda counts: removed - counts @ means / len(means), len(means),
                                               B=B, seed=seed, level=level)
        band = intervals.percentile_interval(means, level)
        rows.append({"valuator": label, "q": float(q), "removed": removed,
                     "effect": ground_truth.removal_effect(losses, random), "ci_low": finite_or_none(low),
                     "ci_high": finite_or_none(high), "random_mean": float(means.mean()), "random_low": band[0],
                     "random_high": band[1]})
    return pl.DataFrame(rows, schema=REMOVAL_SCHEMA)


def fact_attribution(scores: Mapping[str, Scores], supporting: Mapping[str, Sequence[str]],
                     ks: Sequence[int] = (1, 5, 10), *, level: float = 0.95, B: int = 1000,
                     seed: int = 0) -> pl.DataFrame:
    """Recall@k for each k and MRR per valuator with a per-anchor matrix; ``supporting``: anchor
    id -> the ids of the candidates carrying its answer (anchors absent or empty are skipped)."""
    rows = []
    for label, s in scores.items():
        if s.per_anchor is None:
            continue
        position = {cid: i for i, cid in enumerate(s.candidate_ids)}
        unknown = sorted({a for a in supporting if a not in set(s.anchor_ids or ())}
                         | {c for ids in supporting.values() for c in ids if c not in position})
        if unknown:
            raise ValueError(f"supporting sets name anchors or candidates valuator {label!r} did not score: "
                             f"{', '.join(unknown[:5])}")
        sets = [[position[c] for c in supporting.get(a, ())] for a in s.anchor_ids]
        per_anchor = np.asarray(s.per_anchor, dtype=np.float64)
        metrics = [(f"recall@{k}", k, ground_truth.anchor_recall(per_anchor, sets, k, s.candidate_ids)) for k in ks]
        metrics.append(("mrr", None, ground_truth.reciprocal_rank(per_anchor, sets, s.candidate_ids)))
        for metric, k, values in metrics:
            defined = values[np.isfinite(values)]
            low, high = _mean_interval(defined, level, B, seed)
            rows.append({"valuator": label, "metric": metric, "k": k,
                         "value": float(defined.mean()) if len(defined) else None,
                         "ci_low": low, "ci_high": high, "anchors": len(defined)})
    return pl.DataFrame(rows, schema=FACT_SCHEMA)
