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
    assert table.row(0, named=True) == {"a": "a", "b": "b", "q": 0.5, "k": 2, "overlap": 0.5}


def test_scores_from_different_pools_are_refused():
    one = Scores(("x", "y"), [1, 2], "v", "1", {})
    other = Scores(("y", "x"), [1, 2], "w", "1", {})
    with pytest.raises(ValueError, match="scored different candidate pools"):
        leaderboard.scores_frame({"one": one, "other": other})
