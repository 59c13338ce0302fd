"""Leaderboard metrics as pure functions of polars frames: no printing, no files.

Inputs are a wide scores frame: ``candidate_id`` and one float column per valuator label,
every valuator scoring the same pool.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import polars as pl

from dvbench.harness.records import Scores
from dvbench.harness.sizes import count_of


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

    A valuator whose scores are all equal has no ranking: its rho and p-value are null.
    """
    from scipy.stats import spearmanr

    rows = []
    for a, b in itertools.combinations(_labels(frame), 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: reported as null below
            result = spearmanr(frame[a].to_numpy(), frame[b].to_numpy())
        rho, p = float(result.statistic), float(result.pvalue)
        rows.append({"a": a, "b": b, "rho": None if rho != rho else rho,
                     "p_value": None if p != p else p, "n": frame.height})
    return pl.DataFrame(rows, schema={"a": pl.String, "b": pl.String, "rho": pl.Float64,
                                      "p_value": pl.Float64, "n": pl.Int64})


def top_ids(frame: pl.DataFrame, label: str, count: int) -> pl.Series:
    """The ``count`` best candidates by ``label``; equal scores ordered by candidate id."""
    ranked = frame.sort([label, "candidate_id"], descending=[True, False])
    return ranked["candidate_id"].head(count)


def overlap(frame: pl.DataFrame, fractions: Sequence[float]) -> pl.DataFrame:
    """``|top_q(A) & top_q(B)| / |top_q(A)|`` for every pair of valuators and fraction q.

    ``top_q`` keeps ``round(q * M)`` candidates (half up, at least one), ties by candidate id.
    """
    rows = []
    for q in fractions:
        k = count_of(float(q), frame.height)
        tops = {label: set(top_ids(frame, label, k).to_list()) for label in _labels(frame)}
        for a, b in itertools.combinations(tops, 2):
            rows.append({"a": a, "b": b, "q": float(q), "k": k, "overlap": len(tops[a] & tops[b]) / k})
    return pl.DataFrame(rows, schema={"a": pl.String, "b": pl.String, "q": pl.Float64,
                                      "k": pl.Int64, "overlap": pl.Float64})
