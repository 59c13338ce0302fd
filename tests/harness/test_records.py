import numpy as np
import pytest

from dvbench.harness.records import Example, Scores


def test_scores_are_read_only_float64_and_rank_ties_by_id():
    scores = Scores(("b", "a", "c"), [1, 2, 2], "v", "1", {"x": 1})
    assert scores.values.dtype == np.float64
    with pytest.raises(ValueError):
        scores.values[0] = 5.0
    assert scores.top(3) == ("a", "c", "b")


@pytest.mark.parametrize("kwargs, message", [
    ({"candidate_ids": ("a", "a"), "values": [1, 2]}, "repeat a candidate id"),
    ({"candidate_ids": ("a", "b"), "values": [1, np.inf]}, "non-finite score.*'b' = inf"),
    ({"candidate_ids": ("a", "b"), "values": [1, 2, 3]}, r"shape \(3,\); expected \(2,\)"),
    ({"candidate_ids": ("a", "b"), "values": [1, 2], "per_anchor": np.zeros((1, 2))}, "without anchor ids"),
    ({"candidate_ids": ("a", "b"), "values": [1, 2], "per_anchor": np.zeros((2, 2)), "anchor_ids": ("x",)},
     r"per-anchor scores of v has shape \(2, 2\); expected \(1, 2\)"),
])
def test_scores_refuse_inconsistent_data(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Scores(valuator="v", version="1", config={}, **kwargs)


def test_examples_are_frozen():
    example = Example("1", "do", meta={"defect": None})
    with pytest.raises(AttributeError):
        example.id = "2"
    with pytest.raises(TypeError):
        example.meta["defect"] = "x"
