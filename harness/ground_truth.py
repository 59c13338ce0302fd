"""Ground-truth metrics of a valuator against counterfactual retraining (docs/definitions.md § Ground
truth), pure functions of arrays. Losses are ``L(θ, x)``, mean answer-token NLL in nats; every
score is "higher = helps the anchors more".

- **LDS** (Park et al. 2023, as dattri and bergson): with ``K`` retrained subsets ``S_k`` of the
  ``M`` candidates (``subsets``, ``K × M`` bool) and their anchors' losses ``L(θ_k, x)``
  (``losses``, ``K × N``), per anchor ``x``:
  ``LDS(τ, x) = Spearman_k(Σ_{z∈S_k} τ(z, x), −L(θ_k, x))``. Spearman is scipy's ``spearmanr``
  (average ranks for ties), NaN when either side is constant over the subsets. Global LDS, for
  aggregate scores: ``Spearman_k(Σ_{z∈S_k} τ(z), −mean_x L(θ_k, x))``. −1..1, higher is better.
- **Removal**: ``Δ = mean_x L(θ_{T∖top_q(τ)}, x) − mean_r mean_x L(θ_{T∖R_r}, x)``, the ``R_r``
  random removals of the same size. Nats; positive (higher) is better: removing what τ values
  most hurts the anchors more than removing at random.
- **Fact attribution**: anchor ``x`` with supporting candidates ``F(x)``; the pool ranked by
  ``τ(·, x)`` best first, ties by candidate id (:func:`~dvbench.harness.records.best_first`);
  ``Recall@k(x) = |top_k ∩ F(x)| / |F(x)|`` (``top_k`` the whole pool when ``k ≥ M``);
  ``RR(x) = 1 / rank`` of the first supporting candidate (rank 1 = best). Anchors with no
  supporting set are NaN per anchor and left out of the means. 0..1, higher is better.
- **AUPRC**: defective candidates are the positive class and a lower score flags; average
  precision of the ranking by ascending score, scikit-learn's definition
  ``Σ_t (R_t − R_{t−1}) P_t`` over distinct thresholds (tied scores flagged together), equal to
  ``average_precision_score(defective, −scores)``. 0..1 (chance: the defective fraction),
  higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dvbench.harness import resampled
from dvbench.harness.records import best_first


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` with the same row of ``y`` (``(r, n)`` each); NaN for
    a row where either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    return np.where(np.isfinite(rho), rho, np.nan)


def _check_bank(subsets: np.ndarray, losses: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    subsets, losses = np.asarray(subsets, dtype=bool), np.asarray(losses, dtype=np.float64)
    if subsets.ndim != 2 or subsets.shape[1] != m or losses.ndim != 2 or losses.shape[0] != subsets.shape[0]:
        raise ValueError(f"subsets {subsets.shape} and losses {losses.shape} do not match K x M (M = {m}) and K x N")
    return subsets, losses


def subset_predictions(per_anchor: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """``(K, N)``: ``Σ_{z∈S_k} τ(z, x)`` for every subset and anchor."""
    return np.asarray(subsets, dtype=np.float64) @ np.asarray(per_anchor, dtype=np.float64).T


def lds_per_anchor(per_anchor: np.ndarray, subsets: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """``(N,)``: each anchor's LDS from the ``N × M`` per-anchor matrix, ``K × M`` subsets and
    ``K × N`` retrained losses; NaN where a side is constant over the subsets."""
    per_anchor = np.asarray(per_anchor, dtype=np.float64)
    subsets, losses = _check_bank(subsets, losses, per_anchor.shape[1])
    if losses.shape[1] != per_anchor.shape[0]:
        raise ValueError(f"losses cover {losses.shape[1]} anchors, the per-anchor matrix {per_anchor.shape[0]}")
    return spearman_rows(subset_predictions(per_anchor, subsets).T, -losses.T)


def global_lds(scores: np.ndarray, subsets: np.ndarray, losses: np.ndarray) -> float:
    """LDS of aggregate scores ``(M,)`` against the anchors' mean retrained loss; NaN where a
    side is constant."""
    scores = np.asarray(scores, dtype=np.float64)
    subsets, losses = _check_bank(subsets, losses, len(scores))
    return float(spearman_rows((subsets @ scores)[None], -losses.mean(1)[None])[0])


def removal_effect(removed_losses: np.ndarray, random_losses: np.ndarray) -> float:
    """``mean_x L(removed) − mean_r mean_x L(random_r)``: ``(N,)`` and ``(R, N)`` losses."""
    removed, random = np.asarray(removed_losses, dtype=np.float64), np.asarray(random_losses, dtype=np.float64)
    if random.ndim != 2 or random.shape[1] != removed.shape[0]:
        raise ValueError(f"random removals' losses {random.shape} do not match R x N (N = {removed.shape[0]})")
    return float(removed.mean() - random.mean(1).mean())


def _supporting_ranks(per_anchor: np.ndarray, supporting: Sequence[Sequence[int] | None],
                      ids: Sequence[str]) -> list[np.ndarray | None]:
    """Per anchor, the 1-based ranks of its supporting candidates (None: no supporting set)."""
    per_anchor = np.asarray(per_anchor, dtype=np.float64)
    if len(supporting) != per_anchor.shape[0] or len(ids) != per_anchor.shape[1]:
        raise ValueError(f"{len(supporting)} supporting sets and {len(ids)} ids for a {per_anchor.shape} matrix")
    ranks = []
    for row, support in zip(per_anchor, supporting):
        if support is None or len(support) == 0:
            ranks.append(None)
            continue
        rank = np.empty(len(ids), dtype=np.int64)
        rank[best_first(ids, row)] = np.arange(1, len(ids) + 1)
        ranks.append(rank[np.unique(np.asarray(support, dtype=np.int64))])
    return ranks


def anchor_recall(per_anchor: np.ndarray, supporting: Sequence[Sequence[int] | None], k: int,
                  ids: Sequence[str]) -> np.ndarray:
    """``(N,)``: Recall@k per anchor; ``supporting[i]``: candidate positions supporting anchor i
    (None or empty: NaN)."""
    return np.array([np.nan if r is None else float(np.mean(r <= k))
                     for r in _supporting_ranks(per_anchor, supporting, ids)])


def reciprocal_rank(per_anchor: np.ndarray, supporting: Sequence[Sequence[int] | None],
                    ids: Sequence[str]) -> np.ndarray:
    """``(N,)``: 1 / rank of each anchor's best-ranked supporting candidate (NaN: none given)."""
    return np.array([np.nan if r is None else 1.0 / r.min() for r in _supporting_ranks(per_anchor, supporting, ids)])


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def recall_at_k(per_anchor: np.ndarray, supporting: Sequence[Sequence[int] | None], k: int,
                ids: Sequence[str]) -> float:
    """Recall@k: the mean of :func:`anchor_recall` over anchors with a supporting set."""
    return _mean(anchor_recall(per_anchor, supporting, k, ids))


def mrr(per_anchor: np.ndarray, supporting: Sequence[Sequence[int] | None], ids: Sequence[str]) -> float:
    """Mean reciprocal rank over anchors with a supporting set."""
    return _mean(reciprocal_rank(per_anchor, supporting, ids))


def auprc(scores: np.ndarray, defective: Sequence[bool]) -> float:
    """Average precision of flagging low scores as defective; NaN without a defective candidate."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(resampled.average_precision(scores, np.asarray(defective, dtype=bool), np.ones((1, len(scores))))[0])
