"""The example plugin's own test: the harness's contract check on dvbench's tiny valuation task,
plus what the plugin promises."""

from dvbench.harness.testing import check_valuator

from dvbench_length import LengthValuator

# dvbench's fixtures (tiny_model_dir, tiny_model, tiny_valuation_task). A standalone plugin says this
# in its top-level conftest.py; here, inside dvbench's own suite, that conftest is not top-level.
pytest_plugins = ["dvbench.harness.testing"]


def test_contract(tiny_valuation_task):
    check_valuator(LengthValuator, task=tiny_valuation_task)
    check_valuator(LengthValuator, LengthValuator.Config(shorter_is_better=True), task=tiny_valuation_task)


def test_longer_answers_score_higher(tiny_valuation_task):
    scores = check_valuator(LengthValuator, task=tiny_valuation_task)
    longest = min(tiny_valuation_task.candidates, key=lambda c: (-len(c.output), c.id))
    assert scores.top(1) == (longest.id,)
