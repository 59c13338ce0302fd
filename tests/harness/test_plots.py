import numpy as np
import polars as pl

from dvbench.harness import ground_truth_tables, leaderboard, plots
from dvbench.harness.records import Scores


def test_lds_and_removal_plots_are_drawn_from_saved_tables_alike(tmp_path):
    rng = np.random.default_rng(0)
    ids, anchors = tuple(f"c{i:02d}" for i in range(30)), tuple(f"x{i}" for i in range(5))
    matrix = rng.normal(size=(5, 30))
    scores = {"a": Scores(ids, matrix.mean(0), "a", "0", {}, matrix, anchors),
              "b": Scores(ids, rng.normal(size=30), "b", "0", {})}
    bank = ground_truth_tables.Bank(ids, anchors, rng.random((12, 30)) < 0.5, rng.normal(size=(12, 5)), np.zeros(5))
    removals = ground_truth_tables.Removals(anchors, {(v, q): rng.normal(size=5) for v in "ab" for q in (0.1, 0.2)},
                                            {q: rng.normal(size=(3, 5)) for q in (0.1, 0.2)})
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "scores").mkdir()
    for label, s in scores.items():
        pl.DataFrame({"candidate_id": ids, "score": s.values}).write_parquet(tmp_path / f"scores/{label}.parquet")
    leaderboard.spearman(leaderboard.scores_frame(scores), B=50).write_parquet(tmp_path / "leaderboard/spearman.parquet")
    assert [p.name for p in plots.render(tmp_path)] == ["spearman.png", "scatter.png", "overlap.png"]
    ground_truth_tables.lds(scores, bank, B=50).write_parquet(tmp_path / "leaderboard/lds.parquet")
    ground_truth_tables.removal(removals, B=50).write_parquet(tmp_path / "leaderboard/removal.parquet")
    first = {p.name: p.read_bytes() for p in plots.render(tmp_path)}
    assert set(first) == {"spearman.png", "scatter.png", "overlap.png", "lds.png", "removal.png"}
    assert {p.name: p.read_bytes() for p in plots.render(tmp_path)} == first
