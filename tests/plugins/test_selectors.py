import numpy as np
import pytest

from dvbench.harness.records import Scores
from dvbench.harness.testing import check_selector
from dvbench.plugins.selectors.random import RandomSelector
from dvbench.plugins.selectors.score_bins import ScoreBins
from dvbench.plugins.selectors.top_k import TopK


def _scores(values, ids=None):
    ids = ids or [f"c{i:02d}" for i in range(len(values))]
    return Scores(tuple(ids), values, "test", "0", {})


def test_top_k_by_count_and_fraction_breaks_ties_by_id():
    scores = _scores([0.5, 0.9, 0.5, 0.1, 0.9, 0.5], ids=["f", "e", "d", "c", "b", "a"])
    by_count = check_selector(TopK, TopK.Config(k=4), scores)
    assert by_count.subsets == {"top_4": ("b", "e", "a", "d")}
    by_fraction = check_selector(TopK, TopK.Config(k=0.5), scores)
    assert by_fraction.subsets == {"top_0.5": ("b", "e", "a")}


def test_top_k_larger_than_the_pool_is_refused():
    with pytest.raises(ValueError, match="asks for 7 candidates but the pool holds 6"):
        TopK(TopK.Config(k=7)).select(_scores([0.0] * 6), reference=_scores([0.0] * 6), seed=0)


def test_random_selector_is_seeded_and_ignores_scores():
    scores = _scores(list(np.linspace(0, 1, 30)))
    chosen = check_selector(RandomSelector, RandomSelector.Config(k=5, seed=3), scores)
    expected = np.random.default_rng(3).choice(30, size=5, replace=False)
    assert chosen.subsets["random_5"] == tuple(f"c{i:02d}" for i in expected)
    from_spec_seed = RandomSelector(RandomSelector.Config(k=5)).select(scores, reference=scores, seed=3)
    assert from_spec_seed.subsets == chosen.subsets


@pytest.mark.parametrize("k", [0, -1, 0.0, 1.5])
def test_sizes_out_of_range_are_refused(k):
    with pytest.raises(ValueError):
        TopK.Config(k=k)


def _naive_bins(values, reference, ids, bins):
    """Rank-matched bins by sorting Python tuples: (-score, id) for the top, (score, id) for the bottom."""
    out = {}
    for label in bins:
        op, t = (label[:2], float(label[2:])) if label[1] == "=" else (label[0], float(label[1:]))
        passes = {">": lambda v: v > t, ">=": lambda v: v >= t, "<": lambda v: v < t, "<=": lambda v: v <= t}[op]
        n = sum(passes(r) for r in reference)
        key = (lambda p: (-p[0], p[1])) if op.startswith(">") else (lambda p: (p[0], p[1]))
        out[label] = tuple(i for _, i in sorted(zip(values, ids), key=key)[:n])
    return out


def test_score_bins_are_rank_matched_to_the_reference():
    rng = np.random.default_rng(4)
    ids = [f"c{i:03d}" for i in range(200)]
    reference = _scores(list(rng.integers(0, 21, 200) / 20), ids)  # ICP-like: ties on a grid
    other = _scores(list(rng.normal(size=200).round(1)), ids)  # ties too
    bins = ScoreBins.Config().bins
    assert bins == ["<=0.5", ">0.5", ">0.8", ">0.85", ">0.9"]
    own = check_selector(ScoreBins, None, reference)
    assert own.subsets == _naive_bins(reference.values, reference.values, ids, bins)
    for label, chosen in own.subsets.items():  # the reference's bins are its thresholded sets
        op, t = (">", float(label[1:])) if label[0] == ">" else ("<=", float(label[2:]))
        expected = {i for i, v in zip(ids, reference.values) if (v > t if op == ">" else v <= t)}
        assert set(chosen) == expected
    matched = ScoreBins().select(other, reference=reference, seed=0)
    assert matched.subsets == _naive_bins(other.values, reference.values, ids, bins)
    assert [len(v) for v in matched.subsets.values()] == [len(v) for v in own.subsets.values()]


def test_score_bins_config_reads_and_refuses_bins():
    assert ScoreBins.Config(bins=[" >= 2", "<-1e-3", ">.5"]).bins == [">=2", "<-1e-3", ">.5"]
    with pytest.raises(ValueError, match="cannot read bin '=>0.5'"):
        ScoreBins.Config(bins=["=>0.5"])
    with pytest.raises(ValueError, match="bins repeat"):
        ScoreBins.Config(bins=[">0.5", "> 0.5"])


def test_score_bins_refuse_another_pool_and_allow_empty_bins():
    with pytest.raises(ValueError, match="another candidate pool"):
        ScoreBins().select(_scores([0.1, 0.2]), reference=_scores([0.1, 0.2], ["x", "y"]), seed=0)
    chosen = ScoreBins(ScoreBins.Config(bins=[">2"])).select(_scores([0.1, 0.2]), reference=_scores([0.1, 0.2]), seed=0)
    assert chosen.subsets == {">2": ()}
