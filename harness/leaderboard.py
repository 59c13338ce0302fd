"""Leaderboard metrics as pure functions of polars frames: no printing, no files.

Inputs are a wide scores frame: ``candidate_id`` and one float column per valuator label,
every valuator scoring the same pool.

Spearman, overlap and defect detection carry a seeded percentile bootstrap interval
(``ci_low``, ``ci_high``; :mod:`dvbench.harness.intervals`) that resamples the candidates: the
statistic recomputed on ``M`` candidates drawn with replacement (:mod:`dvbench.harness.resampled`
says how copies rank), at ``level`` (default 0.95) over ``B`` resamples (default 1000; 0: no
interval, null). Undefined values (a constant valuator, a class absent) are null, and so is an
interval whose every resample is undefined. :func:`directions` says which way each table is
better. The ground-truth tables live in :mod:`dvbench.harness.ground_truth_tables`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from dvbench.harness import ground_truth, intervals, resampled
from dvbench.harness.intervals import finite_or_none
from dvbench.harness.records import Scores, Selection, best_first
from dvbench.harness.sizes import count_of


SPEARMAN_SCHEMA = {"a": pl.String, "b": pl.String, "rho": pl.Float64, "p_value": pl.Float64, "n": pl.Int64,
                   "ci_low": pl.Float64, "ci_high": pl.Float64}
OVERLAP_SCHEMA = {"a": pl.String, "b": pl.String, "q": pl.Float64, "k": pl.Int64, "overlap": pl.Float64,
                  "ci_low": pl.Float64, "ci_high": pl.Float64}
PER_ANCHOR_SCHEMA = {"a": pl.String, "b": pl.String, "anchors": pl.Int64, "median": pl.Float64,
                     "q25": pl.Float64, "q75": pl.Float64}
DEFECT_AUC_SCHEMA = {"valuator": pl.String, "clean": pl.Int64, "defective": pl.Int64, "auc": pl.Float64,
                     "auc_low": pl.Float64, "auc_high": pl.Float64, "auprc": pl.Float64, "auprc_low": pl.Float64,
                     "auprc_high": pl.Float64}

DIRECTIONS = {
    "spearman": "agreement, not quality: Spearman's rho of two valuators' scores over the pool (-1..1, 1 = same ranking)",
    "overlap": "agreement, not quality: shared fraction of two valuators' top-q candidates (0..1; random "
               "rankings share q on average)",
    "spearman_per_anchor": "agreement, not quality: median per-anchor Spearman's rho of two valuators (-1..1)",
    "selection_overlap": "agreement, not quality: shared fraction of two valuators' selected subsets (0..1)",
    "defect_auc": "higher is better: auc = P(clean scores above defective), ties 1/2 (0..1, 0.5 = chance); "
                  "auprc = average precision flagging low scores (0..1, chance = defective fraction)",
    "evaluation": "per metric, as its evaluator states: win_rate higher is better (%, 50 = as good as the base "
                  "model); losses lower are better (nats)",
    "lds": "higher is better (Spearman's rho of predicted and measured subset effects, -1..1, 0 = no signal); "
           "kind global and per_anchor are not comparable",
    "removal": "higher is better (nats: anchors' mean loss after removing the valuator's top q minus after "
               "random removals of the same size; 0 = no better than random)",
    "fact_attribution": "higher is better (recall@k and MRR of the supporting candidates, 0..1)",
}
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


def directions() -> dict[str, str]:
    """One line per leaderboard table: which way is better, and the unit."""
    return dict(DIRECTIONS)


def spearman(frame: pl.DataFrame, *, level: float = 0.95, B: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Spearman's rho and its two-sided p-value (scipy) for every pair of valuators, with a
    bootstrap interval over the candidates.

    Each column is ranked once (one ``spearmanr`` call on the whole matrix). A valuator whose
    scores are all equal has no ranking: its rho, p-value and interval are null.
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
    pairs = list(itertools.combinations(range(len(labels)), 2))
    values = [frame[label].to_numpy().astype(np.float64) for label in labels]
    draws = {pair: [] for pair in pairs}
    for counts in intervals.count_blocks(frame.height, B=B, seed=seed):
        ranks = [resampled.average_ranks(v, counts) for v in values]
        for i, j in pairs:
            draws[(i, j)].append(resampled.pearson_of_ranks(ranks[i], ranks[j], counts))
    rows = []
    for i, j in pairs:
        low, high = _interval(draws[(i, j)], level)
        rows.append({"a": labels[i], "b": labels[j], "rho": finite_or_none(rho[i, j]),
                     "p_value": finite_or_none(p[i, j]),
                     "n": frame.height, "ci_low": low, "ci_high": high})
    return pl.DataFrame(rows, schema=SPEARMAN_SCHEMA)


def _interval(draws: list[np.ndarray], level: float) -> tuple[float | None, float | None]:
    low, high = intervals.percentile_interval(np.concatenate(draws) if draws else np.empty(0), level)
    return finite_or_none(low), finite_or_none(high)


def overlap(frame: pl.DataFrame, fractions: Sequence[float], *, level: float = 0.95, B: int = 1000,
            seed: int = 0) -> pl.DataFrame:
    """``|top_q(A) & top_q(B)| / |top_q(A)|`` for every pair of valuators and fraction q, with a
    bootstrap interval over the candidates (a resample's top q: its ``k`` best draws).

    ``top_q`` keeps ``round(q * M)`` candidates (half up, at least one), ties by candidate id.
    Each valuator is ranked once; a candidate's position in that ranking decides every q.
    Two independent random rankings overlap by ``k / M`` (about q) on average.
    """
    ids = frame["candidate_id"].to_numpy()
    positions = {}
    for label in _labels(frame):
        position = np.empty(frame.height, dtype=np.int64)
        position[best_first(ids, frame[label].to_numpy())] = np.arange(frame.height)
        positions[label] = position
    sizes = [count_of(float(q), frame.height) for q in fractions]
    pairs = list(itertools.combinations(positions, 2))
    draws = {(i, pair): [] for i in range(len(sizes)) for pair in pairs}
    for counts in intervals.count_blocks(frame.height if pairs else 0, B=B, seed=seed):
        for i, k in enumerate(sizes):
            kept = {label: resampled.top_k_copies(position, k, counts) for label, position in positions.items()}
            for a, b in pairs:
                draws[(i, (a, b))].append(np.minimum(kept[a], kept[b]).sum(1) / k)
    rows = []
    for i, (q, k) in enumerate(zip(fractions, sizes)):
        for a, b in pairs:
            shared = int(np.count_nonzero((positions[a] < k) & (positions[b] < k)))
            low, high = _interval(draws[(i, (a, b))], level)
            rows.append({"a": a, "b": b, "q": float(q), "k": k, "overlap": shared / k, "ci_low": low, "ci_high": high})
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


def defect_auc(frame: pl.DataFrame, defective: Sequence[bool], *, level: float = 0.95, B: int = 1000,
               seed: int = 0) -> pl.DataFrame:
    """Per valuator, the probability that a clean candidate scores above a defective one (ties
    count one half): the AUC of ranking clean candidates first (0.5: chance); and the AUPRC,
    average precision of flagging the lowest scores as defective
    (:func:`~dvbench.harness.ground_truth.auprc`; chance: the defective fraction). Both with
    bootstrap intervals over the candidates."""
    from scipy.stats import rankdata

    bad = np.asarray(defective, dtype=bool)
    clean, defects = int((~bad).sum()), int(bad.sum())
    labels = _labels(frame)
    values = {label: frame[label].to_numpy().astype(np.float64) for label in labels}
    draws = {(label, metric): [] for label in labels for metric in ("auc", "auprc")}
    for counts in intervals.count_blocks(frame.height if clean and defects else 0, B=B, seed=seed):
        for label in labels:
            draws[(label, "auc")].append(resampled.auc(values[label], bad, counts))
            draws[(label, "auprc")].append(resampled.average_precision(values[label], bad, counts))
    rows = []
    for label in labels:
        ranks = rankdata(values[label])
        u = ranks[~bad].sum() - clean * (clean + 1) / 2
        auc_low, auc_high = _interval(draws[(label, "auc")], level)
        auprc_low, auprc_high = _interval(draws[(label, "auprc")], level)
        rows.append({"valuator": label, "clean": clean, "defective": defects,
                     "auc": float(u / (clean * defects)) if clean and defects else None,
                     "auc_low": auc_low, "auc_high": auc_high,
                     "auprc": finite_or_none(ground_truth.auprc(values[label], bad)) if defects else None,
                     "auprc_low": auprc_low, "auprc_high": auprc_high})
    return pl.DataFrame(rows, schema=DEFECT_AUC_SCHEMA)


SUMMARY_SCHEMA = {"valuator": pl.String, "lds": pl.Float64, "lds_low": pl.Float64, "lds_high": pl.Float64,
                  "lds_kind": pl.String, "removal": pl.Float64, "removal_low": pl.Float64,
                  "removal_high": pl.Float64, "fact_mrr": pl.Float64, "auc": pl.Float64, "auprc": pl.Float64,
                  "seconds": pl.Float64}


def summary(tables: Mapping[str, pl.DataFrame], seconds: Mapping[str, float]) -> pl.DataFrame:
    """One row per valuator of the headline ground-truth numbers, each higher-is-better: LDS (the
    per-anchor kind where the valuator has a matrix, else the global kind, named in ``lds_kind``),
    the removal effect at the smallest q, the planted-fact MRR, the defect AUC and AUPRC; and the
    seconds its scores took. Missing tables leave nulls."""

    def first(name: str, label: str, *conditions) -> dict:
        table = tables.get(name)
        if table is None:
            return {}
        rows = table.filter(pl.col("valuator") == label, *conditions)
        return rows.row(0, named=True) if rows.height else {}

    rows = []
    for label in seconds:
        lds = first("lds", label, pl.col("kind") == "per_anchor") or first("lds", label)
        q = tables["removal"]["q"].min() if "removal" in tables else None
        removal = first("removal", label, pl.col("q") == q) if q is not None else {}
        fact = first("fact_attribution", label, pl.col("metric") == "mrr")
        defect = first("defect_auc", label)
        rows.append({"valuator": label, "lds": lds.get("lds"), "lds_low": lds.get("ci_low"),
                     "lds_high": lds.get("ci_high"), "lds_kind": lds.get("kind"), "removal": removal.get("effect"),
                     "removal_low": removal.get("ci_low"), "removal_high": removal.get("ci_high"),
                     "fact_mrr": fact.get("value"), "auc": defect.get("auc"), "auprc": defect.get("auprc"),
                     "seconds": seconds[label]})
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)
