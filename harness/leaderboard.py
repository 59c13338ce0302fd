"""Leaderboard metrics as pure functions of polars frames: no printing, no files.

Inputs are a wide scores frame: ``candidate_id`` and one float column per valuator label,
every valuator scoring the same pool.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from dvbench.harness.records import Scores, Selection, best_first
from dvbench.harness.sizes import count_of


SPEARMAN_SCHEMA = {"a": pl.String, "b": pl.String, "rho": pl.Float64, "p_value": pl.Float64, "n": pl.Int64}
OVERLAP_SCHEMA = {"a": pl.String, "b": pl.String, "q": pl.Float64, "k": pl.Int64, "overlap": pl.Float64}
PER_ANCHOR_SCHEMA = {"a": pl.String, "b": pl.String, "anchors": pl.Int64, "median": pl.Float64,
                     "q25": pl.Float64, "q75": pl.Float64}
DEFECT_AUC_SCHEMA = {"valuator": pl.String, "clean": pl.Int64, "defective": pl.Int64, "auc": pl.Float64}
SELECTION_OVERLAP_SCHEMA = {"selection": pl.String, "subset": pl.String, "a": pl.String, "b": pl.String,
                            "k": pl.Int64, "overlap": pl.Float64}


def scores_frame(scores: Mapping[str, Scores]) -> pl.DataFrame:
    """One row per candidate, one column per valuator label; refuses differing pools."""
    labels = list(scores)
    ids = scores[labels[0]].candidate_ids
    for label in labels[1:]:
        if scores[label].candidate_ids != ids:
            raise ValueError(f"valuators {labels[0]!r} and {label!r} scored different candidate pools")
    return pl.DataFrame(
        {"candidate_id": list(ids), **{label: scores[label].values for label in labels}},
        schema={"candidate_id": pl.String, **{label: pl.Float64 for label in labels}},
    )


def _labels(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c != "candidate_id"]


def spearman(frame: pl.DataFrame) -> pl.DataFrame:
    """Spearman's rho and its two-sided p-value (scipy) for every pair of valuators.

    Each column is ranked once (one ``spearmanr`` call on the whole matrix). A valuator whose
    scores are all equal has no ranking: its rho and p-value are null.
    """
    from scipy.stats import spearmanr

    labels = _labels(frame)
    if len(labels) < 2:
        return pl.DataFrame(schema=SPEARMAN_SCHEMA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: reported as null below
        result = spearmanr(frame.select(labels).to_numpy())
    rho, p = np.atleast_2d(result.statistic), np.atleast_2d(result.pvalue)
    if rho.shape == (1, 1):  # two columns: scipy returns scalars
        rho, p = np.array([[1.0, rho[0, 0]], [rho[0, 0], 1.0]]), np.array([[0.0, p[0, 0]], [p[0, 0], 0.0]])
    rows = [{"a": labels[i], "b": labels[j], "rho": _finite(rho[i, j]), "p_value": _finite(p[i, j]),
             "n": frame.height} for i, j in itertools.combinations(range(len(labels)), 2)]
    return pl.DataFrame(rows, schema=SPEARMAN_SCHEMA)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def overlap(frame: pl.DataFrame, fractions: Sequence[float]) -> pl.DataFrame:
    """``|top_q(A) & top_q(B)| / |top_q(A)|`` for every pair of valuators and fraction q.

    ``top_q`` keeps ``round(q * M)`` candidates (half up, at least one), ties by candidate id.
    Each valuator is ranked once; a candidate's position in that ranking decides every q.
    """
    ids = frame["candidate_id"].to_numpy()
    positions = {}
    for label in _labels(frame):
        position = np.empty(frame.height, dtype=np.int64)
        position[best_first(ids, frame[label].to_numpy())] = np.arange(frame.height)
        positions[label] = position
    rows = []
    for q in fractions:
        k = count_of(float(q), frame.height)
        for a, b in itertools.combinations(positions, 2):
            shared = int(np.count_nonzero((positions[a] < k) & (positions[b] < k)))
            rows.append({"a": a, "b": b, "q": float(q), "k": k, "overlap": shared / k})
    return pl.DataFrame(rows, schema=OVERLAP_SCHEMA)


def selection_overlap(selections: Mapping[str, Mapping[str, Selection]]) -> pl.DataFrame:
    """``|S_a & S_b| / |S_a|`` for every selection entry, subset and pair of valuators (in spec
    order): per bin for ``score_bins``, whose bins are rank-matched. Null for an empty subset."""
    rows = []
    for entry, chosen in selections.items():
        labels = list(chosen)
        for subset in chosen[labels[0]].subsets if labels else ():
            for a, b in itertools.combinations(labels, 2):
                first, second = chosen[a].subsets[subset], set(chosen[b].subsets[subset])
                shared = sum(1 for cid in first if cid in second)
                rows.append({"selection": entry, "subset": subset, "a": a, "b": b, "k": len(first),
                             "overlap": shared / len(first) if first else None})
    return pl.DataFrame(rows, schema=SELECTION_OVERLAP_SCHEMA)


def evaluation(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per fine-tuned (trainer, selection, valuator, subset) and eval subset, one column
    per metric, in the order trained (the whole eval set, ``all``, first for each model)."""
    keys = ["trainer", "selection", "valuator", "subset", "eval_subset"]
    if frame.is_empty():
        return pl.DataFrame(schema={k: pl.String for k in keys})
    return frame.pivot(on="metric", index=keys, values="value", aggregate_function="first", maintain_order=True)


def spearman_per_anchor(scores: Mapping[str, Scores]) -> pl.DataFrame:
    """Spearman's rho between two valuators' per-anchor scores, anchor by anchor: its median and
    quartiles over the anchors, for every pair that has per-anchor matrices on the same anchors.
    An anchor on which either valuator's scores are all equal has no rho and is not counted."""
    from scipy.stats import rankdata

    labels = [label for label, s in scores.items() if s.per_anchor is not None]
    ranks = {label: rankdata(np.asarray(scores[label].per_anchor, dtype=np.float64), axis=1) for label in labels}
    rows = []
    for a, b in itertools.combinations(labels, 2):
        if scores[a].anchor_ids != scores[b].anchor_ids:
            continue
        x = ranks[a] - ranks[a].mean(axis=1, keepdims=True)
        y = ranks[b] - ranks[b].mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
        rho = rho[np.isfinite(rho)]
        quartiles = np.percentile(rho, [25, 50, 75]).tolist() if len(rho) else [None] * 3
        rows.append({"a": a, "b": b, "anchors": len(rho), "median": quartiles[1], "q25": quartiles[0],
                     "q75": quartiles[2]})
    return pl.DataFrame(rows, schema=PER_ANCHOR_SCHEMA)


def defect_auc(frame: pl.DataFrame, defective: Sequence[bool]) -> pl.DataFrame:
    """Per valuator, the probability that a clean candidate scores above a defective one (ties
    count one half): the AUC of ranking clean candidates first (0.5: chance)."""
    from scipy.stats import rankdata

    bad = np.asarray(defective, dtype=bool)
    clean, defects = int((~bad).sum()), int(bad.sum())
    rows = []
    for label in _labels(frame):
        ranks = rankdata(frame[label].to_numpy())
        u = ranks[~bad].sum() - clean * (clean + 1) / 2
        rows.append({"valuator": label, "clean": clean, "defective": defects,
                     "auc": float(u / (clean * defects)) if clean and defects else None})
    return pl.DataFrame(rows, schema=DEFECT_AUC_SCHEMA)
