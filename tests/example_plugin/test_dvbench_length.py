"""The example plugin's own test: the harness's contract check, plus what the plugin promises."""

from dvbench.harness.testing import check_valuator, tiny_task

from dvbench_length import LengthValuator


def test_contract():
    check_valuator(LengthValuator)
    check_valuator(LengthValuator, LengthValuator.Config(shorter_is_better=True))


def test_longer_answers_score_higher():
    task = tiny_task()
    scores = check_valuator(LengthValuator, task=task)
    longest = min(task.candidates, key=lambda c: (-len(c.output), c.id))
    assert scores.top(1) == (longest.id,)
