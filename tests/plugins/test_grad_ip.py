"""grad_ip against explicit per-example gradients, flattened and dotted."""

import numpy as np
import pytest
import torch

from dvbench.harness.data.generated import generate
from dvbench.harness.executor import LocalExecutor
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.testing import check_valuator, out_of_memory_above, reference_logprobs
from dvbench.plugins.valuators.grad_ip import GradIpValuator


@pytest.fixture(scope="module")
def task(tiny_model_dir):
    data = generate(7, 4, 0, seed=5)
    return ValuationTask(data["candidates"], data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain"))


def _loss(model, seq):
    return -reference_logprobs(model, seq).mean()


def explicit(task, pattern=None):
    """Per-example gradients by autograd, one unpadded sequence at a time: ``{layer: (n, numel)}``
    for anchors and candidates."""
    model, tokenizer = load_model(task.model)
    enc = Encoder(tokenizer, task.template)
    layers = tracked_linears(model, pattern)
    weights = [m.weight for m in layers.values()]

    def grads(examples):
        rows = [torch.autograd.grad(_loss(model, enc.training(e)), weights) for e in examples]
        return {name: torch.stack([r[k].flatten() for r in rows]) for k, name in enumerate(layers)}

    return grads(task.anchors), grads(task.candidates)


@pytest.fixture(scope="module")
def grads(task):
    return explicit(task)


def _pairs(grads):
    anchors, candidates = grads
    return sum(anchors[name] @ candidates[name].T for name in anchors).numpy()


def _grad_ip(**config):
    return GradIpValuator(GradIpValuator.Config(**config))


@pytest.mark.parametrize("shard_size", [64, 2])  # one shard; four (2, 2, 2, 1 candidates)
def test_mean_equals_explicit_gradients_dotted(task, grads, shard_size):
    expected = _pairs(grads).mean(axis=0)
    scores = _grad_ip(batch_size=3, shard_size=shard_size).score(task)  # three batches a shard at most
    np.testing.assert_allclose(scores.values, expected, rtol=1e-6)
    assert scores.per_anchor is None


@pytest.mark.parametrize("budget_gb, shard_size", [(4.0, 64), (1e-6, 64), (1e-6, 2)])  # all layers at once;
def test_per_anchor_and_fraction_positive_equal_explicit(task, grads, budget_gb, shard_size):  # one at a time
    expected = _pairs(grads)
    scores = _grad_ip(aggregate="fraction_positive", max_gradient_gb=budget_gb, batch_size=3,
                      shard_size=shard_size).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-12)
    assert scores.values.tolist() == (expected > 0).mean(axis=0).tolist()
    assert 0 < (expected > 0).mean() < 1  # both signs occur


def test_per_anchor_with_the_mean_aggregate(task, grads):
    expected = _pairs(grads)
    scores = _grad_ip(per_anchor=True, batch_size=3).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scores.values, expected.mean(axis=0), rtol=1e-6)


def _cosines(grads):
    anchors, candidates = (torch.cat([g[name] for name in g], 1) for g in grads)
    return (torch.nn.functional.normalize(anchors, dim=1) @ torch.nn.functional.normalize(candidates, dim=1).T).numpy()


def test_normalized_mean_is_the_mean_cosine(task, grads):
    expected = _cosines(grads)
    scores = _grad_ip(normalize=True, batch_size=3).score(task)
    np.testing.assert_allclose(scores.values, expected.mean(axis=0), rtol=1e-6)
    assert scores.per_anchor is None
    assert -1 < expected.min() < 0 < expected.max() < 1


@pytest.mark.parametrize("config", [dict(per_anchor=True), dict(aggregate="fraction_positive")])
def test_normalized_pairs_are_explicit_cosines(task, grads, config):
    expected = _cosines(grads)
    scores = _grad_ip(normalize=True, **config).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-12)
    aggregate = (expected > 0).mean(axis=0) if config.get("aggregate") else expected.mean(axis=0)
    np.testing.assert_allclose(scores.values, aggregate, rtol=1e-6)


def test_normalize_refuses_sign_log():
    with pytest.raises(ValueError, match="cannot be combined with transform: sign_log"):
        GradIpValuator.Config(normalize=True, transform="sign_log")


def test_sign_log_is_the_papers_released_computation(task, grads):
    anchors, candidates = grads
    expected = np.zeros((len(task.anchors), len(task.candidates)))
    smallest = np.full(expected.shape, np.inf)
    for name in anchors:
        a, c = (torch.sign(g) * g.abs().clamp(1e-4, 1.0) for g in (anchors[name], candidates[name]))
        s = (a @ c.T).numpy()
        smallest = np.minimum(smallest, np.abs(s))
        with np.errstate(divide="ignore", invalid="ignore"):
            expected += np.nan_to_num(np.sign(s) * np.log(np.abs(s)), nan=0.0, posinf=0.0, neginf=0.0)
    scores = _grad_ip(transform="sign_log").score(task)
    # sign(s)·log|s| is ill-conditioned where a tensor's product cancels to rounding noise (|s| ~ 1e-23
    # here): its sign is the summation order's. Compare every other pair.
    stable = smallest > 1e-12
    assert stable.mean() > 0.8
    np.testing.assert_allclose(scores.per_anchor[stable], expected[stable], rtol=1e-6)


def test_the_tracked_pattern_is_respected(task):
    only = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, tracked=r"layers\.1\.mlp")
    anchors, candidates = explicit(only, r"layers\.1\.mlp")
    assert set(anchors) == {f"model.layers.1.mlp.{p}_proj" for p in ("gate", "up", "down")}
    np.testing.assert_allclose(_grad_ip().score(only).values, _pairs((anchors, candidates)).mean(axis=0), rtol=1e-6)


def test_first_order_agreement_with_a_gradient_step(task, grads):
    """(L(θ, x) − L(θ − η∇L(z), x)) / η → ∇L(x)·∇L(z) as η → 0, error O(η). (Below η ~ 1e-4 the
    difference of losses meets Llama's float32 RMSNorm, which it keeps even in a float64 model.)"""
    model, tokenizer = load_model(task.model)
    enc = Encoder(tokenizer, task.template)
    layers = tracked_linears(model)
    z, x = task.candidates[0], task.anchors[0]
    gz = torch.autograd.grad(_loss(model, enc.training(z)), [m.weight for m in layers.values()])
    expected = _pairs(grads)[0, 0]
    original = [m.weight.detach().clone() for m in layers.values()]
    errors = []
    for eta in (1e-1, 1e-2, 1e-3):
        with torch.no_grad():
            before = _loss(model, enc.training(x)).item()
            for m, g in zip(layers.values(), gz):
                m.weight -= eta * g
            after = _loss(model, enc.training(x)).item()
            for m, w in zip(layers.values(), original):
                m.weight.copy_(w)
        errors.append(abs((before - after) / eta - expected))
    assert errors[1] < 0.2 * errors[0] and errors[2] < 0.2 * errors[1] and errors[2] < 1e-3 * max(1.0, abs(expected))


class Stopping(LocalExecutor):
    """In process, in order, recording each unit; raises :class:`KeyboardInterrupt` in place of
    unit number ``stop`` (from 0)."""

    def __init__(self, stop=None):
        self.stop, self.units = stop, []

    def map(self, fn, units):
        for unit in units:
            if len(self.units) == self.stop:
                raise KeyboardInterrupt
            self.units.append(unit)
            yield fn(unit)


def test_an_interrupted_pair_matrix_resumes_from_its_shards(task, tmp_path, monkeypatch):
    """One layer a group, 4 shards a group: cut in the second group, the rerun forms no anchor
    gradient for the first and computes only the missing shards, to the same bytes."""
    from dvbench.harness.lm import products

    def run(folder, executor):
        work = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, work=folder,
                             executor=executor)
        return _grad_ip(aggregate="fraction_positive", max_gradient_gb=1e-6, batch_size=3, shard_size=2).score(work)

    whole = run(tmp_path / "whole", LocalExecutor())
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", Stopping(6))
    formed, real = [], products.per_example_grads
    monkeypatch.setattr(products, "per_example_grads", lambda *a, **k: formed.append(list(a[2])) or real(*a, **k))
    resumed = Stopping()
    again = run(tmp_path / "cut", resumed)
    layers = list(tracked_linears(load_model(task.model)[0]))
    assert formed == [[name] for name in layers[1:]]  # the first group's shards were all saved
    assert [len(u) for u in resumed.units[:2]] == [2, 1]  # the second group's last two shards
    assert len(resumed.units) == 2 + 4 * (len(layers) - 2)
    assert again.per_anchor.tobytes() == whole.per_anchor.tobytes()


def test_contract(task):
    check_valuator(GradIpValuator, task=task)


@pytest.mark.parametrize("config", [{}, {"aggregate": "fraction_positive", "per_anchor": True}])  # mean; pairs
def test_auto_backs_off_when_a_batch_runs_out_of_memory(task, grads, config):
    """A model that runs out of memory on more than 2 rows per forward, as a small GPU would:
    ``auto`` halves from the CPU's 8 to 2 and the products are still the explicit ones."""
    from dvbench.harness.lm.models import resident

    lines = []
    with out_of_memory_above(resident(task.model)[0], 2):
        logged = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, log=lines.append)
        scores = _grad_ip(batch_size="auto", **config).score(logged)
    if config:
        np.testing.assert_allclose(scores.per_anchor, _pairs(grads), rtol=1e-6, atol=1e-12)
    else:
        np.testing.assert_allclose(scores.values, _pairs(grads).mean(axis=0), rtol=1e-6)
    assert scores.stats["batch_size"] == 2
    assert lines == [f"valuators.grad_ip: out of memory on cpu; running the unit again at batch_size {n}"
                     for n in (4, 2)]
