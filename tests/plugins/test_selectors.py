import numpy as np
import pytest

from dvbench.harness.records import Scores
from dvbench.harness.testing import check_selector
from dvbench.plugins.selectors.random import RandomSelector
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
