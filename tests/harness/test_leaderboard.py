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


def _tied_frame():
    import numpy as np

    rng = np.random.default_rng(6)
    return _frame(a=rng.integers(0, 4, 16).astype(float).tolist(), b=rng.integers(0, 3, 16).astype(float).tolist(),
                  c=rng.normal(size=16).tolist())


def test_existing_columns_keep_their_values():
    """The old formulas, written out: scipy per pair, top-k sets by (score, id), pairs of AUC."""
    import itertools

    from scipy.stats import spearmanr

    frame = _tied_frame()
    for row, (a, b) in zip(leaderboard.spearman(frame).iter_rows(named=True), itertools.combinations("abc", 2)):
        result = spearmanr(frame[a], frame[b])
        assert (row["a"], row["b"], row["n"]) == (a, b, 16)
        assert (row["rho"], row["p_value"]) == pytest.approx((result.statistic, result.pvalue))
    ids = frame["candidate_id"].to_list()

    def top(label, k):
        return set(sorted(range(16), key=lambda i: (-frame[label][i], ids[i]))[:k])

    table = leaderboard.overlap(frame, [0.25, 0.5])
    expected = [(a, b, q, k, len(top(a, k) & top(b, k)) / k) for q, k in ((0.25, 4), (0.5, 8))
                for a, b in itertools.combinations("abc", 2)]
    assert table.select("a", "b", "q", "k", "overlap").rows() == expected
    defective = [i % 3 == 0 for i in range(16)]
    aucs = leaderboard.defect_auc(frame, defective)
    for row in aucs.iter_rows(named=True):
        values = frame[row["valuator"]].to_list()
        pairs = [(c, d) for c, x in zip(values, defective) if not x for d, y in zip(values, defective) if y]
        assert row["auc"] == pytest.approx(sum(1.0 if c > d else 0.5 if c == d else 0.0 for c, d in pairs) / len(pairs))
    assert aucs.columns[:4] == ["valuator", "clean", "defective", "auc"]


def test_intervals_resample_candidates_as_literal_loops():
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, roc_auc_score

    frame = _tied_frame()
    a, b = frame["a"].to_numpy(), frame["b"].to_numpy()
    defective = np.array([i % 3 == 0 for i in range(16)])
    rng = np.random.default_rng(9)
    rows = [rng.integers(0, 16, 16) for _ in range(200)]

    def interval(values):
        values = [v for v in values if np.isfinite(v)]
        return tuple(np.quantile(values, [0.05, 0.95]))

    rho = [spearmanr(a[r], b[r]).statistic for r in rows]
    row = leaderboard.spearman(frame, level=0.9, B=200, seed=9).row(0, named=True)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(interval(rho))
    ids = frame["candidate_id"].to_list()

    def top(values, r, k):  # the k best draws: score, then id, then draw order
        return set(sorted(range(16), key=lambda j: (-values[r[j]], ids[r[j]], j))[:k])

    row = leaderboard.overlap(frame, [0.25], level=0.9, B=200, seed=9).row(0, named=True)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(interval([len(top(a, r, 4) & top(b, r, 4)) / 4
                                                                     for r in rows]))
    row = leaderboard.defect_auc(frame, defective.tolist(), level=0.9, B=200, seed=9).row(0, named=True)
    kept = [r for r in rows if 0 < defective[r].sum() < 16]
    assert (row["auc_low"], row["auc_high"]) == pytest.approx(interval([roc_auc_score(~defective[r], a[r])
                                                                        for r in kept]))
    assert row["auprc"] == pytest.approx(average_precision_score(defective, -a))
    assert (row["auprc_low"], row["auprc_high"]) == pytest.approx(interval([average_precision_score(defective[r], -a[r])
                                                                            for r in kept]))
    assert leaderboard.spearman(frame, B=0)["ci_low"].to_list() == [None] * 3


def test_every_table_states_its_direction():
    directions = leaderboard.directions()
    for table in ("spearman", "overlap", "spearman_per_anchor", "selection_overlap", "defect_auc", "evaluation",
                  "lds", "removal", "fact_attribution"):
        assert "better" in directions[table] or "not quality" in directions[table]


def test_the_summary_takes_each_valuators_headline_numbers():
    from dvbench.harness.leaderboard import summary

    tables = {
        "lds": pl.DataFrame({"valuator": ["a", "a", "b"], "kind": ["global", "per_anchor", "global"],
                             "lds": [0.1, 0.6, -0.2], "ci_low": [0.0, 0.4, -0.5], "ci_high": [0.2, 0.8, 0.1]}),
        "removal": pl.DataFrame({"valuator": ["a", "a", "b", "b"], "q": [0.2, 0.1, 0.1, 0.2],
                                 "effect": [9.0, 0.03, -0.01, 9.0], "ci_low": [9.0, 0.01, -0.02, 9.0],
                                 "ci_high": [9.0, 0.05, 0.0, 9.0]}),
        "fact_attribution": pl.DataFrame({"valuator": ["a", "a"], "metric": ["recall@1", "mrr"], "value": [0.5, 0.75]}),
        "defect_auc": pl.DataFrame({"valuator": ["b", "a"], "auc": [0.4, 0.7], "auprc": [0.1, 0.3]}),
    }
    rows = summary(tables, {"a": 1.5, "b": 0.25}).rows(named=True)
    assert rows[0] == {"valuator": "a", "lds": 0.6, "lds_low": 0.4, "lds_high": 0.8, "lds_kind": "per_anchor",
                       "removal": 0.03, "removal_low": 0.01, "removal_high": 0.05, "fact_mrr": 0.75, "auc": 0.7,
                       "auprc": 0.3, "seconds": 1.5}
    assert rows[1] == {"valuator": "b", "lds": -0.2, "lds_low": -0.5, "lds_high": 0.1, "lds_kind": "global",
                       "removal": -0.01, "removal_low": -0.02, "removal_high": 0.0, "fact_mrr": None, "auc": 0.4,
                       "auprc": 0.1, "seconds": 0.25}
    assert summary({}, {"c": 2.0}).row(0, named=True)["lds"] is None
