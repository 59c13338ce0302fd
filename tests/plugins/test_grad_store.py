"""grad_store against explicit autograd gradients: exact at full dims, 1/√dims below, its
Gauss–Newton preconditioner against a dense solve, and its store reused, never mixed."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dvbench.harness.artifacts import ArtifactStore
from dvbench.harness.data.generated import generate
from dvbench.harness.lm import projection
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.models import load_model
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.stages.valuation import _work
from dvbench.harness.template import Template
from dvbench.harness.testing import check_valuator, reference_logprobs
from dvbench.plugins.valuators.grad_ip import GradIpValuator
from dvbench.plugins.valuators.grad_store import GradStoreValuator

FULL = 64  # above every side of the tiny Llama's linear layers (16 and 32)


@pytest.fixture(scope="module")
def task(tiny_model_dir):
    data = generate(7, 4, 0, seed=5)
    return ValuationTask(data["candidates"], data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain"))


@pytest.fixture(scope="module")
def grads(task):
    """Per-example gradients by autograd, one unpadded sequence at a time: ``{layer: (n, out, in)}``
    for anchors and candidates."""
    model, tokenizer = load_model(task.model)
    enc = Encoder(tokenizer, task.template)
    layers = tracked_linears(model)

    def of(examples):
        rows = [torch.autograd.grad(-reference_logprobs(model, enc.training(e)).mean(),
                                    [m.weight for m in layers.values()]) for e in examples]
        return {name: torch.stack([r[k] for r in rows]) for k, name in enumerate(layers)}

    return of(task.anchors), of(task.candidates)


def _flat(grads):
    return torch.cat([g.flatten(1) for g in grads.values()], 1).numpy()


def _store(**config):
    return GradStoreValuator(GradStoreValuator.Config(**config))


def _cosines(a, c):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T


def test_full_orthogonal_projection_is_grad_ip(task, grads):
    expected = _flat(grads[0]) @ _flat(grads[1]).T
    scores = _store(dims=FULL, projection="orthogonal", batch_size=3).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scores.values, expected.mean(axis=0), rtol=1e-6)
    pairs = GradIpValuator(GradIpValuator.Config(per_anchor=True)).score(task).per_anchor
    np.testing.assert_allclose(scores.per_anchor, pairs, rtol=1e-6, atol=1e-12)
    width = sum(m.numel() for m in grads[0].values()) // len(task.anchors)
    assert scores.stats == {"dims": width, "bytes_per_candidate": 8 * width,  # float64 model: float64 rows
                            "batch_size": 3}


def test_normalized_full_projection_is_cosine_similarity(task, grads):
    expected = _cosines(_flat(grads[0]), _flat(grads[1]))
    scores = _store(dims=FULL, projection="orthogonal", normalize=True, aggregate="max").score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scores.values, expected.max(axis=0), rtol=1e-6)
    assert -1 < expected.min() < 0 < expected.max() < 1


def test_aggregates_come_from_the_matrix(task):
    matrix = _store(dims=4).score(task).per_anchor
    assert _store(dims=4, aggregate="fraction_positive").score(task).values.tolist() == \
        (matrix > 0).mean(axis=0).tolist()
    assert 0 < (matrix > 0).mean() < 1


def test_error_shrinks_like_one_over_root_dims(task, grads):
    """The relative error of the pair matrix, root-mean-square over 16 seeds, against dims: a
    log-log slope near −1/2 (Gaussian projections, unbiased). Autograd's gradients, projected
    explicitly as ``P_g G P_aᵀ``."""
    model, _ = load_model(task.model)
    linears = tracked_linears(model)
    exact = _flat(grads[0]) @ _flat(grads[1]).T
    dims, errors = (4, 8, 16), []
    for k in dims:
        squares = []
        for seed in range(16):
            matrices = projection.projections(linears, k, seed, "gaussian")
            a, c = (_projected(g, matrices) for g in grads)
            squares.append((np.linalg.norm(a @ c.T - exact) / np.linalg.norm(exact)) ** 2)
        errors.append(np.sqrt(np.mean(squares)))
    slope = np.polyfit(np.log(dims), np.log(errors), 1)[0]
    assert -0.8 < slope < -0.3, (errors, slope)


def _projected(grads, matrices):
    return np.concatenate([(pg @ grads[name] @ pa.T).flatten(1).numpy() for name, (pg, pa) in matrices.items()], 1)


def test_gauss_newton_is_a_dense_solve(task, grads):
    """Each layer's projected gradients formed explicitly, ``P_g G P_aᵀ`` from autograd's ``G``,
    then ``a_l (F_l + λ_l I)⁻¹ φ_l`` by numpy's dense solve."""
    model, _ = load_model(task.model)
    linears = tracked_linears(model)
    matrices = projection.projections(linears, 4, 7, "gaussian")
    for normalize in (False, True):
        rows = [_projected(g, matrices) for g in grads]
        if normalize:
            rows = [r / np.linalg.norm(r, axis=1, keepdims=True) for r in rows]
        expected, start = 0, 0
        for name in linears:
            k = matrices[name][0].shape[0] * matrices[name][1].shape[0]
            a, c = (r[:, start:start + k] for r in rows)
            moment = c.T @ c / len(c)
            damped = moment + 0.3 * np.trace(moment) / k * np.eye(k)
            expected = expected + np.linalg.solve(damped, a.T).T @ c.T
            start += k
        scores = _store(dims=4, seed=7, preconditioner="gauss_newton", damping_factor=0.3,
                        normalize=normalize).score(task)
        np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-6, atol=1e-10)


def test_a_reused_store_scores_the_same_bits(task, tmp_path, monkeypatch):
    work = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, work=tmp_path)
    first = _store(dims=4).score(work)
    assert len(list(tmp_path.glob("store-*.npy"))) == 1
    monkeypatch.setattr(projection, "project", _counting(projection.project, calls := []))
    again = _store(dims=4, aggregate="max").score(work)
    assert [len(c) for c in calls] == [len(task.anchors)]  # the anchors' rows only: the store is read back
    assert np.array_equal(again.per_anchor, first.per_anchor)
    calls.clear()
    other = ValuationTask(task.candidates, task.anchors[:2], task.model, template=task.template, work=tmp_path)
    fewer = _store(dims=4).score(other)
    assert [len(c) for c in calls] == [2]
    np.testing.assert_allclose(fewer.per_anchor, first.per_anchor[:2], rtol=1e-12)  # batched apart: rounding
    calls.clear()
    seed = _store(dims=4, seed=1)
    tracked = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, work=tmp_path,
                            tracked="mlp")
    for valuator, on in [(seed, work), (_store(dims=4), tracked)]:
        valuator.score(on)
        assert len(calls[0]) == len(task.candidates)  # rebuilt, under another name
        calls.clear()
    assert len(list(tmp_path.glob("store-*.npy"))) == 3


def _counting(project, calls):
    def counted(model, sequences, *args, **kwargs):
        calls.append(sequences)
        return project(model, sequences, *args, **kwargs)
    return counted


def test_the_store_folder_is_keyed_without_the_anchors(tmp_path):
    ctx = SimpleNamespace(store=ArtifactStore(tmp_path))

    def folder(valuator, anchors="a", tracked=None):
        producer = {**valuator.provenance(), "candidates": "c", "anchors": anchors, "template": {}, "tracked": tracked,
                    "seed": 0, "model": "m"}
        return _work(ctx, valuator, producer)[0]

    store = folder(_store())
    assert folder(_store(), anchors="b") == store == folder(_store(aggregate="max", normalize=True))
    assert folder(_store(seed=1)) != store and folder(_store(), tracked="mlp") != store
    assert folder(GradIpValuator(), anchors="b") != folder(GradIpValuator())


def test_contract(task):
    check_valuator(GradStoreValuator, GradStoreValuator.Config(dims=4), task=task)
