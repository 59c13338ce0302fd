"""one_step against a literal deep copy of the model stepped with torch.optim."""

import copy
import dataclasses
from pathlib import Path

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

    monkeypatch.setattr(one_step_module, "resident", lambda ref: (model, tokenizer))
    monkeypatch.setattr(OneStepValuator, "_step", step_then_check)
    OneStepValuator(OneStepValuator.Config(learning_rate=LR)).score(task)
    assert restored == [True] * len(task.candidates)
    assert all(torch.equal(p, original[n]) for n, p in model.named_parameters())


def test_contract(task):
    check_valuator(OneStepValuator, OneStepValuator.Config(learning_rate=LR), task=task)


def test_noise_floor_stats(task):
    stats = OneStepValuator(OneStepValuator.Config(learning_rate=LR)).score(task).stats
    assert stats["noise_floor"] < 1e-9 and stats["below_noise_floor"] == 0  # float64: far above rounding
    assert stats["pairs"] == 20 and stats["ties"] == 0
    as_float32 = dataclasses.replace(task, model=dataclasses.replace(task.model, dtype="float32"))
    tiny_step = OneStepValuator.Config(learning_rate=1e-6, precision="model")
    stats = OneStepValuator(tiny_step).score(as_float32).stats
    assert 0 <= stats["noise_floor"] < 1e-4 and 0 <= stats["below_noise_floor"] <= 1


def test_float64_by_default_whatever_the_model_dtype(task):
    as_float32 = dataclasses.replace(task, model=dataclasses.replace(task.model, dtype="float32"))
    config = OneStepValuator.Config(learning_rate=2e-5)
    upcast = OneStepValuator(config).score(as_float32)
    assert np.array_equal(upcast.per_anchor, OneStepValuator(config).score(task).per_anchor)
    in_float32 = OneStepValuator(config.model_copy(update={"precision": "model"})).score(as_float32)
    assert not np.array_equal(in_float32.per_anchor, upcast.per_anchor)


SHARED = Path(__file__).parents[2].parent / "shared" / "data" / "alpaca_gpt4"
LAST_MLPS = r"layers\.(2[89])\.mlp"  # the embedded model's last two of 30 blocks


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(),
                    reason="../shared/data/alpaca_gpt4 (real Alpaca-GPT4 rows) is not beside the project")
def test_real_rows_step_effect_is_first_order_in_the_default_dtype():
    """On real rows, the float32 embedded model and η = 2e-5: one_step's change equals
    η ∇L(x)·∇L(z) (autograd here) to first order, not rounding. Where the true second-order term
    is large (seen from a step twice as long: Δ(2η) ≈ 2Δ(η) when first order holds), the first
    order is checked by Richardson extrapolation, 2Δ(η) − Δ(2η)/2 = η ∇L(x)·∇L(z) + O(η³)."""
    from dvbench.harness.data.files import load_examples

    shortest = lambda rows, n: sorted(rows, key=lambda e: len(e.instruction + e.input + e.output))[:n]  # noqa: E731
    candidates = shortest(load_examples(SHARED / "candidates_sample.jsonl")[:200], 4)
    anchors = shortest(load_examples(SHARED / "kmeans100_anchors.jsonl"), 4)
    task = ValuationTask(tuple(candidates), tuple(anchors), ModelRef("embedded"), tracked=LAST_MLPS)
    model, tokenizer = load_model(task.model)
    assert model.config.num_hidden_layers == 30 and model.dtype == torch.float32
    enc = Encoder(tokenizer, task.template)
    weights = [m.weight for m in tracked_linears(model, LAST_MLPS).values()]
    assert len(weights) == 6
    for p in model.parameters():
        p.requires_grad_(False)

    def grad(seq):
        for w in weights:
            w.requires_grad_(True)
        found = torch.autograd.grad(-_mean_logprob(model, seq), weights)
        for w in weights:
            w.requires_grad_(False)
        return torch.cat([g.double().flatten() for g in found])

    gz = torch.stack([grad(enc.training(z)) for z in candidates])
    gx = torch.stack([grad(enc.zero_shot(x)) for x in anchors])
    first_order = 2e-5 * (gx @ gz.T).numpy()
    change = {lr: OneStepValuator(OneStepValuator.Config(learning_rate=lr, aggregate="mean_difference"))
              .score(task) for lr in (2e-5, 4e-5)}
    step, double = change[2e-5].per_anchor, change[4e-5].per_anchor
    ratio = step / first_order
    second_order = np.abs(1 - double / (2 * step))  # the share of the change that is not first order
    assert ratio[second_order < 0.05].min() >= 0.9 and ratio[second_order < 0.05].max() <= 1.1
    assert (second_order < 0.05).mean() >= 0.75
    extrapolated = (2 * step - double / 2) / first_order
    assert extrapolated.min() >= 0.9 and extrapolated.max() <= 1.1
    assert change[2e-5].stats["below_noise_floor"] == 0
