"""Overlap and Spearman at the paper's pool size (M = 52,002, five valuators) against a plain
Python reference: sort by (score desc, id) per valuator and intersect sets; rank with scipy.

    python -m pytest benchmarks/test_leaderboard.py --benchmark-columns=mean,stddev
"""

import itertools

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata

from dvbench.harness import leaderboard

M, LABELS, FRACTIONS = 52_002, ("icp", "grad_ip", "ekfac", "one_step", "random"), (0.05, 0.1, 0.2, 0.5)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    base = rng.normal(size=M)
    columns = {label: np.round(base + rng.normal(scale=i, size=M), 2) for i, label in enumerate(LABELS)}
    return pl.DataFrame({"candidate_id": [f"c{i:06d}" for i in range(M)], **columns})


def reference_overlap(frame):
    ids = frame["candidate_id"].to_list()
    out = {}
    for q in FRACTIONS:
        k = max(1, int(q * M + 0.5))
        tops = {label: set(sorted(zip((-frame[label]).to_list(), ids))[:k]) for label in LABELS}
        tops = {label: {i for _, i in top} for label, top in tops.items()}
        for a, b in itertools.combinations(LABELS, 2):
            out[(a, b, q)] = len(tops[a] & tops[b]) / k
    return out


def reference_spearman(frame):
    ranks = {label: rankdata(frame[label].to_numpy()) for label in LABELS}
    return {(a, b): float(np.corrcoef(ranks[a], ranks[b])[0, 1]) for a, b in itertools.combinations(LABELS, 2)}


def test_overlap_dvbench(benchmark, frame):
    result = benchmark(leaderboard.overlap, frame, FRACTIONS)
    expected = reference_overlap(frame)
    assert {(r["a"], r["b"], r["q"]): r["overlap"] for r in result.iter_rows(named=True)} == expected


def test_overlap_reference(benchmark, frame):
    benchmark(reference_overlap, frame)


def test_spearman_dvbench(benchmark, frame):
    result = benchmark(leaderboard.spearman, frame)
    expected = reference_spearman(frame)
    for row in result.iter_rows(named=True):
        assert row["rho"] == pytest.approx(expected[(row["a"], row["b"])], abs=1e-12)


def test_spearman_reference(benchmark, frame):
    benchmark(reference_spearman, frame)
