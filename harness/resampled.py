"""The leaderboard's statistics on bootstrap resamples given as unit counts (see
:func:`dvbench.harness.intervals.bootstrap_counts`): ``counts`` is ``(b, n)``, row ``r`` how many
times each of the ``n`` units was drawn in resample ``r``. Each function returns ``b`` values and
equals the plain statistic computed on the drawn units as a list, duplicates kept:

- ranks are scipy's average ranks over the ``n`` draws (ties, and copies of one unit, share
  the mean of their positions); Spearman's rho is Pearson's r of those ranks, NaN when a side
  is constant;
- AUC (ties one half) and average precision (scikit-learn's ``average_precision_score``) score
  every draw; NaN when a class is absent from the resample;
- top-k sets rank the draws by a fixed order of the units (best first, ties by candidate id),
  copies of one unit in the order they were drawn.

Everything is computed from one sort of the units' values, O(b n) per block.
"""

from __future__ import annotations

import numpy as np


def _groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ascending order of ``values``, the start of each run of equal values in it, and each
    unit's run."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run = np.empty(len(values), dtype=np.int64)
    run[order] = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    return order, starts, run


def _group_counts(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draws per run of equal values ``(b, runs)``, and each unit's run."""
    order, starts, run = _groups(np.asarray(values, dtype=np.float64))
    return np.add.reduceat(counts[:, order], starts, axis=1), run


def average_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(b, n)``: the average rank every draw of unit ``j`` gets among resample ``r``'s draws."""
    per_run, run = _group_counts(values, counts)
    ranks = np.cumsum(per_run, axis=1) - per_run + (per_run + 1) / 2
    return ranks[:, run]


def spearman(a: np.ndarray, b: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho of ``a`` and ``b`` (``(n,)`` each) over every resample's draws."""
    return pearson_of_ranks(average_ranks(a, counts), average_ranks(b, counts), counts)


def pearson_of_ranks(ra: np.ndarray, rb: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson's r of two average-rank matrices (of :func:`average_ranks`) weighted by ``counts``."""
    mean = (counts.sum(axis=1, keepdims=True) + 1) / 2  # average ranks of n draws always average (n+1)/2
    x, y = ra - mean, rb - mean
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts * x * y).sum(1) / np.sqrt((counts * x * x).sum(1) * (counts * y * y).sum(1))


def auc(scores: np.ndarray, defective: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """P(a clean draw scores above a defective one), ties one half."""
    bad = np.asarray(defective, dtype=bool)
    clean, defects = counts[:, ~bad].sum(1), counts[:, bad].sum(1)
    u = (counts[:, ~bad] * average_ranks(scores, counts)[:, ~bad]).sum(1) - clean * (clean + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(clean * defects > 0, u / (clean * defects), np.nan)


def average_precision(scores: np.ndarray, defective: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision of flagging the lowest scores first, defective the positive class:
    ``Σ_t (R_t − R_{t−1}) P_t`` over the distinct score thresholds ``t``, ascending, where a
    threshold flags every draw scoring at most ``t``."""
    flagged, _ = _group_counts(scores, counts)
    positives, _ = _group_counts(scores, counts * np.asarray(defective, dtype=np.float64))
    true, total = np.cumsum(positives, axis=1), np.cumsum(flagged, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(total > 0, true / np.where(total > 0, total, 1), 0.0)
        return np.where(true[:, -1] > 0, (positives * precision).sum(1) / true[:, -1], np.nan)


def top_k_copies(position: np.ndarray, k: int, counts: np.ndarray) -> np.ndarray:
    """``(b, n)``: how many draws of each unit fall in the resample's top ``k``, the units ranked
    by ``position`` (0 = best)."""
    order = np.argsort(position)
    ordered = counts[:, order]
    before = np.cumsum(ordered, axis=1) - ordered
    kept = np.empty_like(counts)
    kept[:, order] = np.clip(k - before, 0, ordered)
    return kept


def overlap(position_a: np.ndarray, position_b: np.ndarray, k: int, counts: np.ndarray) -> np.ndarray:
    """``|top_k(A) ∩ top_k(B)| / k`` over every resample's draws."""
    return np.minimum(top_k_copies(position_a, k, counts), top_k_copies(position_b, k, counts)).sum(1) / k
