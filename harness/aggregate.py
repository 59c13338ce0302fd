"""The rules that turn an anchors x candidates matrix of per-pair values into one score per
candidate (docs/definitions.md § Aggregates), shared by every valuator that has such a matrix.

- ``indicator`` (icp, one_step) and ``fraction_positive`` (grad_ip, ekfac, bm25, repsim, file) are
  one rule: the fraction of anchors whose per-pair value is strictly positive, ``(1/N) Σ_i 1[v_i > 0]``;
- ``mean`` and ``mean_difference``: the mean over anchors, in float64;
- ``max`` (grad_store): the largest value over anchors (LESS's aggregate);
- :func:`tie_stats`: how many pairs there are and how many are exactly zero (the ties a strict
  indicator counts as not helping).

Pure NumPy: no torch.
"""

from __future__ import annotations

import numpy as np


def fraction_positive(matrix: np.ndarray) -> np.ndarray:
    """Per candidate (column), the fraction of anchors (rows) with a strictly positive value."""
    return (matrix > 0).mean(axis=0)


def mean(matrix: np.ndarray) -> np.ndarray:
    """Per candidate (column), the mean over anchors (rows), in float64."""
    return matrix.astype(np.float64).mean(axis=0)


def largest(matrix: np.ndarray) -> np.ndarray:
    """Per candidate (column), the largest value over anchors (rows), in float64."""
    return matrix.astype(np.float64).max(axis=0)


RULES = {"indicator": fraction_positive, "fraction_positive": fraction_positive,
         "mean": mean, "mean_difference": mean, "max": largest}


def over_anchors(matrix: np.ndarray, rule: str) -> np.ndarray:
    """One score per candidate from the anchors x candidates ``matrix`` by ``rule`` (a key of
    :data:`RULES`)."""
    return RULES[rule](matrix)


def tie_stats(matrix: np.ndarray) -> dict[str, int]:
    """``pairs``: the matrix's size; ``ties``: its entries exactly zero."""
    return {"pairs": int(matrix.size), "ties": int((matrix == 0).sum())}
