import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from dvbench.harness import intervals, resampled


def _literal(statistic, n, B, seed, level):
    """The bootstrap written out: B draws of n indices from the seeded generator, one at a time."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(B):
        value = statistic(rng.integers(0, n, size=n))
        if not np.isnan(value):
            values.append(value)
    return tuple(np.quantile(values, [(1 - level) / 2, (1 + level) / 2]))


def test_bootstrap_is_the_literal_loop_and_drops_nan_resamples():
    x = np.array([3.0, 1.0, 1.0, 2.0, 5.0, 5.0, 0.0])

    def statistic(idx):  # NaN when a resample draws one value only
        return np.nan if len(set(x[idx])) == 1 else float(np.median(x[idx]))

    for level in (0.9, 0.95):
        got = intervals.bootstrap(statistic, len(x), B=300, seed=4, level=level)
        assert got == pytest.approx(_literal(statistic, len(x), 300, 4, level), abs=0)
    assert intervals.bootstrap(lambda idx: np.nan, 5, B=20) == pytest.approx((np.nan, np.nan), nan_ok=True)
    assert intervals.bootstrap(statistic, len(x), B=0) == pytest.approx((np.nan, np.nan), nan_ok=True)
    with pytest.raises(ValueError, match="level"):
        intervals.bootstrap(statistic, len(x), level=95)


def test_counts_are_the_same_draws_as_the_indices():
    n, B = 9, 50
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, n, size=n) for _ in range(B)]
    counts = np.concatenate(list(intervals.count_blocks(n, B=B, seed=7)))
    assert counts.tolist() == [np.bincount(d, minlength=n).tolist() for d in draws]
    x = np.arange(n, dtype=float) ** 2
    vectorised = intervals.bootstrap_counts(lambda c: c @ x / n, n, B=B, seed=7, level=0.8)
    assert vectorised == pytest.approx(_literal(lambda idx: x[idx].mean(), n, B, 7, 0.8), rel=1e-12)


def test_deterministic_under_the_seed_and_different_across_seeds():
    x = np.random.default_rng(0).normal(size=40)
    mean = lambda idx: x[idx].mean()  # noqa: E731
    assert intervals.bootstrap(mean, 40, seed=3) == intervals.bootstrap(mean, 40, seed=3)
    assert intervals.bootstrap(mean, 40, seed=3) != intervals.bootstrap(mean, 40, seed=4)


def test_interval_contains_the_estimate_and_shrinks_with_more_units():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        x = rng.normal(size=n)
        low, high = intervals.bootstrap_counts(lambda c: c @ x / n, n)
        assert low < x.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def _draws(n, B=40, seed=2):
    rows = np.random.default_rng(seed).integers(0, n, size=(B, n))
    return rows, np.stack([np.bincount(r, minlength=n) for r in rows]).astype(float)


def test_resampled_statistics_equal_the_plain_ones_on_the_drawn_units_with_ties():
    rng = np.random.default_rng(3)
    n = 14
    a, b = rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)
    bad = np.zeros(n, dtype=bool)
    bad[[1, 4, 9]] = True
    rows, counts = _draws(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = [spearmanr(a[r], b[r]).statistic for r in rows]
    assert resampled.spearman(a, b, counts) == pytest.approx(rho, nan_ok=True)
    defined = [i for i, r in enumerate(rows) if 0 < bad[r].sum() < n]
    assert resampled.auc(a, bad, counts)[defined] == pytest.approx([roc_auc_score(~bad[rows[i]], a[rows[i]])
                                                                    for i in defined])
    assert resampled.average_precision(a, bad, counts)[defined] == pytest.approx(
        [average_precision_score(bad[rows[i]], -a[rows[i]]) for i in defined])


def test_resampled_overlap_ranks_copies_in_draw_order():
    n, k = 12, 4
    ids = [f"c{i:02d}" for i in range(n)]
    a, b = np.array([2, 1, 1, 1, 0, 3, 3, 2, 0, 1, 2, 0.0]), np.array([0, 1, 2, 2, 1, 0, 3, 1, 2, 0, 1, 3.0])
    rows, counts = _draws(n, B=30)

    def top(values, draws):  # the k best draws: score, then id, then the order they were drawn in
        return set(sorted(range(n), key=lambda j: (-values[draws[j]], ids[draws[j]], j))[:k])

    expected = [len(top(a, r) & top(b, r)) / k for r in rows]
    position = {}
    for name, values in (("a", a), ("b", b)):
        order = sorted(range(n), key=lambda j: (-values[j], ids[j]))
        position[name] = np.array([order.index(j) for j in range(n)])
    assert resampled.overlap(position["a"], position["b"], k, counts) == pytest.approx(expected)
