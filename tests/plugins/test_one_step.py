"""one_step against a literal deep copy of the model stepped with torch.optim."""

import copy

import numpy as np
import pytest
import torch

from dvbench.harness.data.generated import generate
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.testing import check_valuator, reference_logprobs
from dvbench.plugins.valuators import one_step as one_step_module
from dvbench.plugins.valuators.one_step import OneStepValuator

LR = 0.1  # large enough that the changes stand far above rounding (float32 RMSNorm, even in float64 Llama)


@pytest.fixture(scope="module")
def task(tiny_model_dir):
    data = generate(5, 4, 0, seed=8)
    return ValuationTask(data["candidates"], data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain"))


def _mean_logprob(model, seq):
    return reference_logprobs(model, seq).mean()


def literal(task, optimizer):
    """For each candidate: a deep copy of the model, one optimizer step on its loss, the anchors'
    zero-shot scores; returns s_zs(θ') − s_zs(θ), anchors x candidates."""
    model, tokenizer = load_model(task.model)
    enc = Encoder(tokenizer, task.template)
    with torch.no_grad():
        before = np.array([_mean_logprob(model, enc.zero_shot(x)).item() for x in task.anchors])
    columns = []
    for z in task.candidates:
        stepped = copy.deepcopy(model)
        weights = [m.weight for m in tracked_linears(stepped).values()]
        for p in stepped.parameters():
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        (-_mean_logprob(stepped, enc.training(z))).backward()
        if optimizer == "sgd":
            torch.optim.SGD(weights, lr=LR).step()
        else:
            torch.nn.utils.clip_grad_norm_(weights, 1.0)
            torch.optim.AdamW(weights, lr=LR, betas=(0.0, 0.0), weight_decay=0.1).step()
        with torch.no_grad():
            columns.append([_mean_logprob(stepped, enc.zero_shot(x)).item() for x in task.anchors])
    return np.array(columns).T - before[:, None]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw_beta0"])
def test_equals_a_literal_stepped_copy(task, optimizer):
    expected = literal(task, optimizer)
    scores = OneStepValuator(OneStepValuator.Config(learning_rate=LR, optimizer=optimizer, batch_size=3)).score(task)
    assert np.abs(expected).min() > 1e-5  # the steps move every score
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-10)
    assert scores.values.tolist() == (expected > 0).mean(axis=0).tolist()
    mean = OneStepValuator(OneStepValuator.Config(learning_rate=LR, optimizer=optimizer,
                                                  aggregate="mean_difference")).score(task)
    np.testing.assert_allclose(mean.values, expected.mean(axis=0), rtol=1e-6)


def test_parameters_are_restored_bit_for_bit(task, monkeypatch):
    model, tokenizer = load_model(task.model)
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    restored = []
    real_step = OneStepValuator._step

    def step_then_check(self, model, linears, sequence):  # the weights are the original ones before every step
        restored.append(all(torch.equal(p, original[n]) for n, p in model.named_parameters()))
        real_step(self, model, linears, sequence)

    monkeypatch.setattr(one_step_module, "load_model", lambda ref: (model, tokenizer))
    monkeypatch.setattr(OneStepValuator, "_step", step_then_check)
    OneStepValuator(OneStepValuator.Config(learning_rate=LR)).score(task)
    assert restored == [True] * len(task.candidates)
    assert all(torch.equal(p, original[n]) for n, p in model.named_parameters())


def test_contract(task):
    check_valuator(OneStepValuator, OneStepValuator.Config(learning_rate=LR), task=task)
