"""repsim against cosine similarities of hidden states from plain, unpadded transformers forwards."""

import numpy as np
import pytest
import torch

from dvbench.harness.data.generated import generate
from dvbench.harness.errors import InputError
from dvbench.harness.lm.models import load_model
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.template import Template
from dvbench.harness.testing import check_valuator
from dvbench.plugins.valuators.repsim import RepsimValuator


@pytest.fixture(scope="module")
def task(tiny_model_dir):
    data = generate(7, 3, 0, seed=3)
    return ValuationTask(data["candidates"], data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain"))


@pytest.fixture(scope="module")
def explicit(task):
    """``explicit(layer, answer_only=True)``: each example's training sequence run alone through
    ``model(..., output_hidden_states=True)``, the states at ``layer`` averaged over the answer
    positions (or all), cosines by NumPy: ``(N, M)``."""
    model, tokenizer = load_model(task.model)
    encoder = Encoder(tokenizer, task.template)
    sequences = [encoder.training(e) for e in task.anchors + task.candidates]
    assert len({len(s.ids) for s in sequences}) > 2  # batches of mixed lengths, padded
    with torch.no_grad():
        states = [model(torch.tensor([s.ids]), output_hidden_states=True).hidden_states for s in sequences]

    def cosines(layer, answer_only=True):
        means = np.stack([h[layer][0, s.answer_start if answer_only else 0:].mean(0).numpy()
                          for h, s in zip(states, sequences)])
        anchors, candidates = means[:len(task.anchors)], means[len(task.anchors):]
        norms = np.linalg.norm(anchors, axis=1)[:, None] * np.linalg.norm(candidates, axis=1)[None, :]
        return anchors @ candidates.T / norms

    return cosines


def _repsim(**config):
    return RepsimValuator(RepsimValuator.Config(**config))


@pytest.mark.parametrize("layer", [-1, 1, 0])
def test_equals_explicit_cosines_of_hidden_states(task, explicit, layer):
    expected = explicit(layer)
    scores = _repsim(layer=layer, batch_size=4).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scores.values, expected.mean(axis=0), rtol=1e-9)


def test_the_checks_can_tell_layers_and_pooling_apart(explicit):
    last = explicit(-1)
    assert not np.allclose(last, explicit(1), atol=1e-3)
    assert not np.allclose(last, explicit(-1, answer_only=False), atol=1e-3)
    assert np.ptp(last) > 0.1  # not a constant matrix


def test_fraction_positive(task, explicit):
    expected = explicit(-1)
    assert _repsim(aggregate="fraction_positive").score(task).values.tolist() == (expected > 0).mean(axis=0).tolist()


def test_shards_are_reused(task, tmp_path):
    work = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, work=tmp_path)
    first = _repsim().score(work)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["anchors.npz", "candidates-00000000.npz"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.npz")}
    again = _repsim(aggregate="fraction_positive").score(work)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.npz")} == mtimes
    assert np.array_equal(first.per_anchor, again.per_anchor)


def test_a_layer_outside_the_model_is_refused(task):
    with pytest.raises(InputError, match=r"repsim's layer is 3, but the model has 3 hidden layers.*\[-3, 2\]"):
        _repsim(layer=3).score(task)


def test_contract(tiny_valuation_task):
    check_valuator(RepsimValuator, task=tiny_valuation_task)
