import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score

from dvbench.harness import ground_truth, ground_truth_tables
from dvbench.harness.records import Scores

M, N, K = 9, 4, 12
IDS = tuple(f"c{i}" for i in range(M))
ANCHORS = tuple(f"x{i}" for i in range(N))


def _bank(seed=0):
    rng = np.random.default_rng(seed)
    per_anchor = rng.integers(-2, 3, (N, M)).astype(float)  # integers: exact sums, many ties
    subsets = rng.random((K, M)) < 0.5
    losses = rng.integers(0, 4, (K, N)).astype(float)  # ties among the subsets' losses
    losses[:, 3] = 1.0  # anchor x3's loss never changes: no LDS
    return per_anchor, subsets, losses


def _spearman(x, y):
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        rho = spearmanr(x, y).statistic
    return rho if np.isfinite(rho) else np.nan


def test_lds_per_anchor_is_spearman_of_loop_sums_against_negative_loss():
    per_anchor, subsets, losses = _bank()
    expected = []
    for x in range(N):
        predicted = [sum(per_anchor[x, z] for z in range(M) if subsets[k, z]) for k in range(K)]
        expected.append(_spearman(predicted, [-losses[k, x] for k in range(K)]))
    got = ground_truth.lds_per_anchor(per_anchor, subsets, losses)
    assert got == pytest.approx(expected, nan_ok=True) and np.isnan(got[3])


def test_global_lds_uses_the_aggregate_scores_and_the_mean_anchor_loss():
    per_anchor, subsets, losses = _bank(1)
    scores = per_anchor.sum(0)
    predicted = [sum(scores[z] for z in range(M) if subsets[k, z]) for k in range(K)]
    measured = [-sum(losses[k]) / N for k in range(K)]
    assert ground_truth.global_lds(scores, subsets, losses) == pytest.approx(_spearman(predicted, measured))
    assert np.isnan(ground_truth.global_lds(np.ones(M), np.ones((K, M), bool), losses))


def test_removal_effect_is_removed_minus_mean_random_loss():
    removed, random = np.array([2.0, 3.0, 4.0]), np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 5.0]])
    assert ground_truth.removal_effect(removed, random) == pytest.approx(3.0 - (1.0 + 3.0) / 2)


def _naive_ranks(row):
    """1-based rank of each candidate: best first, ties by id (ids sort like their positions)."""
    order = sorted(range(M), key=lambda z: (-row[z], IDS[z]))
    return {z: order.index(z) + 1 for z in range(M)}


def test_recall_and_mrr_are_loops_over_ranks_with_ties_by_id():
    per_anchor, _, _ = _bank(2)
    supporting = [[0, 3], None, [8], [2, 5, 7]]
    for k in (1, 2, 5, 20):
        expected = []
        for x, support in enumerate(supporting):
            if support:
                ranks = _naive_ranks(per_anchor[x])
                expected.append(sum(ranks[z] <= k for z in support) / len(support))
        assert ground_truth.recall_at_k(per_anchor, supporting, k, IDS) == pytest.approx(sum(expected) / len(expected))
    reciprocal = [1 / min(_naive_ranks(per_anchor[x])[z] for z in s) for x, s in enumerate(supporting) if s]
    assert ground_truth.mrr(per_anchor, supporting, IDS) == pytest.approx(sum(reciprocal) / len(reciprocal))
    assert np.isnan(ground_truth.reciprocal_rank(per_anchor, supporting, IDS)[1])


def test_auprc_is_scikit_learns_average_precision_of_ascending_scores():
    rng = np.random.default_rng(4)
    for _ in range(5):
        scores = rng.integers(0, 4, 20).astype(float)
        defective = rng.random(20) < 0.3
        defective[0] = True
        assert ground_truth.auprc(scores, defective) == pytest.approx(average_precision_score(defective, -scores))
    assert np.isnan(ground_truth.auprc(scores, np.zeros(20, bool)))


def _scores():
    per_anchor, subsets, losses = _bank(5)
    with_matrix = Scores(IDS, per_anchor.mean(0), "v", "0", {}, per_anchor, ANCHORS)
    plain = Scores(IDS, per_anchor[0], "w", "0", {})
    bank = ground_truth_tables.Bank(IDS, ANCHORS, subsets, losses, np.zeros(N))
    return {"v": with_matrix, "w": plain}, bank


def test_lds_table_labels_kinds_and_resamples_anchors_or_subsets():
    scores, bank = _scores()
    table = ground_truth_tables.lds(scores, bank, B=200, seed=1)
    assert table.select("valuator", "kind").rows() == [("v", "per_anchor"), ("v", "global"), ("w", "global")]
    per_anchor = ground_truth.lds_per_anchor(scores["v"].per_anchor, bank.subsets, bank.losses)
    defined = per_anchor[np.isfinite(per_anchor)]
    row = table.row(0, named=True)
    assert (row["lds"], row["anchors"], row["subsets"]) == (pytest.approx(defined.mean()), len(defined), K)
    rng = np.random.default_rng(1)  # the anchors' resamples, written out
    means = [defined[rng.integers(0, len(defined), len(defined))].mean() for _ in range(200)]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    predicted, measured = bank.subsets @ scores["w"].values, -bank.losses.mean(1)
    rng = np.random.default_rng(1)  # the subsets' resamples
    rhos = [_spearman(predicted[r], measured[r]) for r in (rng.integers(0, K, K) for _ in range(200))]
    rhos = [r for r in rhos if not np.isnan(r)]
    row = table.row(2, named=True)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.quantile(rhos, [0.025, 0.975])))
    assert row["lds"] == pytest.approx(ground_truth.global_lds(scores["w"].values, bank.subsets, bank.losses))
    with pytest.raises(ValueError, match="another candidate pool"):
        ground_truth_tables.lds({"r": Scores(IDS[::-1], np.zeros(M), "r", "0", {})}, bank)


def test_removal_table_resamples_the_random_removals():
    removals = ground_truth_tables.Removals(
        ("x0", "x1"), {("v", 0.1): np.array([3.0, 5.0]), ("w", 0.1): np.array([1.0, 1.0]),
                       ("v", 0.5): np.array([2.0, 2.0])},
        {0.1: np.array([[1.0, 2.0], [3.0, 3.0], [2.0, 2.0]]), 0.5: np.array([[0.0, 1.0]])})
    table = ground_truth_tables.removal(removals, B=100, seed=2)
    assert table.select("valuator", "q").rows() == [("v", 0.1), ("w", 0.1), ("v", 0.5)]
    row = table.row(0, named=True)
    means = [1.5, 3.0, 2.0]
    assert (row["removed"], row["effect"], row["random_mean"]) == pytest.approx((4.0, 4.0 - 6.5 / 3, 6.5 / 3))
    rng = np.random.default_rng(2)
    effects = [4.0 - np.mean([means[i] for i in rng.integers(0, 3, 3)]) for _ in range(100)]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.quantile(effects, [0.025, 0.975])))
    assert (row["random_low"], row["random_high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert table.row(2, named=True)["ci_low"] == pytest.approx(2.0 - 0.5)  # one random removal: no spread
    with pytest.raises(ValueError, match="no random removals of fraction 0.2"):
        ground_truth_tables.Removals(("x0",), {("v", 0.2): np.zeros(1)}, {0.1: np.zeros((2, 1))})


def test_fact_attribution_is_long_form_per_valuator_with_a_matrix():
    scores, _ = _scores()
    supporting = {"x0": ("c0", "c3"), "x2": ("c8",), "x3": ()}
    table = ground_truth_tables.fact_attribution(scores, supporting, ks=(1, 3), B=50)
    assert table.select("valuator", "metric", "k").rows() == [("v", "recall@1", 1), ("v", "recall@3", 3),
                                                             ("v", "mrr", None)]
    per_anchor = scores["v"].per_anchor
    reciprocal = [1 / min(_naive_ranks(per_anchor[x])[z] for z in s) for x, s in ((0, [0, 3]), (2, [8]))]
    row = table.row(2, named=True)
    assert (row["value"], row["anchors"]) == (pytest.approx(np.mean(reciprocal)), 2)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    with pytest.raises(ValueError, match="did not score: c99"):
        ground_truth_tables.fact_attribution(scores, {"x0": ("c99",)})

