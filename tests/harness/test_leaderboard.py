import polars as pl
import pytest

from dvbench.harness import leaderboard
from dvbench.harness.records import Scores


def _frame(**columns):
    n = len(next(iter(columns.values())))
    return pl.DataFrame({"candidate_id": [f"c{i}" for i in range(n)], **columns})


def test_two_valuators_and_a_constant_one():
    frame = _frame(a=[1.0, 2.0, 3.0, 4.0], b=[4.0, 3.0, 2.0, 1.0], flat=[0.5] * 4)
    table = leaderboard.spearman(frame)
    rows = {(r["a"], r["b"]): r for r in table.iter_rows(named=True)}
    assert rows[("a", "b")]["rho"] == pytest.approx(-1.0)
    assert rows[("a", "flat")]["rho"] is None and rows[("a", "flat")]["p_value"] is None
    pair = leaderboard.spearman(frame.select("candidate_id", "a", "b"))
    assert pair.height == 1 and pair["rho"].item() == pytest.approx(-1.0)
    assert leaderboard.spearman(frame.select("candidate_id", "a")).height == 0


def test_overlap_ties_are_broken_by_id_not_row_order():
    frame = _frame(a=[1.0, 1.0, 1.0, 0.0], b=[0.0, 1.0, 1.0, 1.0])
    table = leaderboard.overlap(frame, [0.5])
    # a's top 2: c0, c1 (tie of three, lowest ids); b's top 2: c1, c2.
    assert table.drop("ci_low", "ci_high").row(0, named=True) == {"a": "a", "b": "b", "q": 0.5, "k": 2, "overlap": 0.5}


def test_scores_from_different_pools_are_refused():
    one = Scores(("x", "y"), [1, 2], "v", "1", {})
    other = Scores(("y", "x"), [1, 2], "w", "1", {})
    with pytest.raises(ValueError, match="scored different candidate pools"):
        leaderboard.scores_frame({"one": one, "other": other})


def test_spearman_per_anchor_is_scipy_row_by_row():
    import numpy as np
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, (6, 30)).astype(float), rng.normal(size=(6, 30))
    a[2] = 1.0  # a constant anchor row: no rho, not counted
    ids, anchors = tuple(f"c{i}" for i in range(30)), tuple(f"x{i}" for i in range(6))
    scores = {name: Scores(ids, m.mean(0), name, "0", {}, m, anchors) for name, m in (("a", a), ("b", b))}
    scores["plain"] = Scores(ids, b.mean(0), "plain", "0", {})  # no matrix: not paired
    table = leaderboard.spearman_per_anchor(scores)
    expected = [spearmanr(a[i], b[i]).statistic for i in range(6) if i != 2]
    row = table.row(0, named=True)
    assert table.height == 1 and (row["a"], row["b"], row["anchors"]) == ("a", "b", 5)
    assert row["median"] == pytest.approx(np.median(expected), abs=1e-12)
    assert (row["q25"], row["q75"]) == pytest.approx(tuple(np.percentile(expected, [25, 75])), abs=1e-12)


def test_defect_auc_counts_clean_over_defective_pairs():
    frame = _frame(good=[3.0, 2.0, 1.0, 0.0, 0.0], bad=[0.0, 1.0, 2.0, 3.0, 1.0])
    defective = [False, False, False, True, True]
    table = {r["valuator"]: r for r in leaderboard.defect_auc(frame, defective).iter_rows(named=True)}

    def naive(values):
        pairs = [(c, d) for c, bad_c in zip(values, defective) if not bad_c for d, bad_d in zip(values, defective) if bad_d]
        return sum(1.0 if c > d else 0.5 if c == d else 0.0 for c, d in pairs) / len(pairs)

    assert table["good"]["auc"] == pytest.approx(naive(frame["good"].to_list()))
    assert table["bad"]["auc"] == pytest.approx(naive(frame["bad"].to_list()))
    assert (table["good"]["clean"], table["good"]["defective"]) == (3, 2)
    assert leaderboard.defect_auc(frame, [False] * 5)["auc"].to_list() == [None, None]
