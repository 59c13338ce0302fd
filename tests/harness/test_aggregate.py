"""The aggregate rules over anchors and the tie count, on a hand-made matrix."""

import subprocess
import sys

import numpy as np
import pytest

from dvbench.harness.aggregate import RULES, over_anchors, tie_stats

MATRIX = np.array([[0.5, 0.0, -1.0],
                   [2.0, 0.0, 0.0],
                   [-0.5, 1e-300, 3.0],
                   [1.0, -2.0, 0.0]])


def test_indicator_and_fraction_positive_count_strictly_positive_anchors():
    for rule in ("indicator", "fraction_positive"):
        assert over_anchors(MATRIX, rule).tolist() == [0.75, 0.25, 0.25]  # zero is not positive


def test_mean_and_mean_difference_are_the_float64_mean():
    for rule in ("mean", "mean_difference"):
        assert over_anchors(MATRIX, rule).tolist() == [0.75, -0.5, 0.5]
    assert over_anchors(MATRIX.astype(np.float32), "mean").dtype == np.float64


def test_max_is_the_largest_value_over_anchors():
    assert over_anchors(MATRIX, "max").tolist() == [2.0, 1e-300, 3.0]  # by hand, column by column


def test_ties_count_exact_zeros_only():
    assert tie_stats(MATRIX) == {"pairs": 12, "ties": 4}


def test_an_unknown_rule_is_a_key_error():
    assert set(RULES) == {"indicator", "fraction_positive", "mean", "mean_difference", "max"}
    with pytest.raises(KeyError):
        over_anchors(MATRIX, "median")


def test_importing_it_imports_no_torch():
    code = "import sys, dvbench.harness.aggregate; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
