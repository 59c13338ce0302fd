"""ekfac against explicit computations on a tiny float64 Llama with one tracked layer (512 weights):
factors from per-sequence autograd, the inverse from an explicit Kronecker matrix solved densely,
and the exact Gauss–Newton matrix from full Jacobians."""

import numpy as np
import pytest
import torch
from safetensors import safe_open
from scipy.stats import spearmanr

from dvbench.harness.config import ConfigError
from dvbench.harness.data.generated import generate
from dvbench.harness.lm import ekfac
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.spec import load_spec
from dvbench.harness.testing import check_valuator, out_of_memory_above
from dvbench.harness.executor import LocalExecutor
from dvbench.harness.lm.batching import Sizes
from dvbench.harness.work import BLOCKS, WorkFiles
from dvbench.plugins.valuators import ekfac as plugin
from dvbench.plugins.valuators.ekfac import EkfacValuator
from dvbench.plugins.valuators.grad_ip import GradIpValuator

LAYER = "model.layers.1.mlp.down_proj"  # 16 x 32: the exact Gauss–Newton matrix is 512 x 512
ANSWER = 12  # every candidate's answer cut to 12 tokens: see test_correlates_with_exact_gauss_newton


@pytest.fixture(scope="module")
def task(tiny_model_dir):
    data = generate(64, 4, 0, seed=5)
    candidates = [c for c in data["candidates"] if len(c.output.encode()) > ANSWER][:24]  # all cut to ANSWER
    return ValuationTask(tuple(candidates), data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain", max_answer_tokens=ANSWER), tracked=LAYER.replace(".", r"\."),
                         seed=3)


@pytest.fixture(scope="module")
def setup(task):
    model, tokenizer = load_model(task.model)
    enc = Encoder(tokenizer, task.template)
    return model, [enc.training(z) for z in task.candidates], [enc.training(x) for x in task.anchors]


def _ekfac(**config):
    return EkfacValuator(EkfacValuator.Config(**config))


def _layer(model):
    return dict(model.named_modules())[LAYER]


def _labels(model, seq, draws):
    """The answer tokens, or with ``draws`` labels sampled by a plain inverse CDF from the
    model's full-vocabulary distribution of one unpadded forward."""
    if draws is None:
        return torch.tensor(seq.answer)
    with torch.no_grad():
        p = model(torch.tensor([seq.ids])).logits[0, seq.answer_start - 1:-1].softmax(-1).double().numpy()
    return torch.tensor([int(np.argmax(np.cumsum(row) > u * row.sum())) for row, u in zip(p, draws.numpy())])


def _explicit(model, seq, draws=None):
    """One unpadded sequence: the layer's inputs ``a``, output gradients ``g`` and weight gradient
    of ``L`` = mean NLL of the (true or sampled) answer labels."""
    layer, captured, labels = _layer(model), {}, _labels(model, seq, draws)

    def hook(module, args, output):
        captured["a"] = args[0][0].detach()
        captured["y"] = output

    handle = layer.register_forward_hook(hook)
    try:
        ids = torch.tensor([seq.ids])
        logp = model(ids).logits[0, seq.answer_start - 1:-1].log_softmax(-1)
        loss = -logp.gather(-1, labels[:, None]).mean()
        weight_grad, output_grad = torch.autograd.grad(loss, [layer.weight, captured["y"]])
    finally:
        handle.remove()
    return captured["a"], output_grad[0], weight_grad


def _kronecker_solve(bases, eigenvalues, damping, vectors):
    """``(Ĝ + λI)⁻¹ v`` with ``Ĝ = (Q_S ⊗ Q_A) diag(vec Λ) (Q_S ⊗ Q_A)ᵀ`` built as a dense matrix."""
    q_a, q_s = bases
    k = torch.kron(q_s, q_a)  # row-major vec(G): index o * in + i
    matrix = k @ torch.diag(eigenvalues.flatten() + damping) @ k.T
    flat = vectors.reshape(len(vectors), -1).T
    return torch.linalg.solve(matrix, flat).T.reshape(vectors.shape)


@pytest.mark.parametrize("labels, shard_size", [("true", 64), ("sampled", 64), ("sampled", 7)])
def test_factors_equal_their_definitions(setup, task, labels, shard_size):
    """One shard, or four (7, 7, 7, 3 candidates) whose sums are added on the driver: the same
    definitions, computed here one unpadded sequence at a time."""
    model, candidates, _ = setup
    draws = ekfac.draws(candidates, task.seed) if labels == "sampled" else None
    sizes = Sizes({"batch_size": (5, 5, 5)}, device="cpu", what="test")  # batches of 5 mix lengths
    fit = dict(labels=draws, sizes=sizes, shard_size=shard_size, files=WorkFiles(None))
    covs = ekfac.covariances(task.model, task.tracked, candidates, advance=lambda n: None, **fit)
    terms = [_explicit(model, s, None if draws is None else draws[i]) for i, s in enumerate(candidates)]
    tokens = sum(len(s.ids) for s in candidates)
    a_cov = sum(a.T @ a for a, _, _ in terms) / tokens
    s_cov = sum(g.T @ g for _, g, _ in terms) / tokens
    torch.testing.assert_close(covs[LAYER][0], a_cov, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(covs[LAYER][1], s_cov, rtol=1e-10, atol=1e-14)

    bases = ekfac.eigenbases(covs, lambda n: None)
    for q, cov in zip(bases[LAYER], (a_cov, s_cov)):
        torch.testing.assert_close(q.T @ q, torch.eye(len(q), dtype=q.dtype), rtol=0, atol=1e-12)
        rotated = q.T @ cov @ q
        off_diagonal = rotated - torch.diag(torch.diagonal(rotated))
        assert off_diagonal.abs().max() < 1e-12 * cov.abs().max()

    eigenvalues = ekfac.corrected_eigenvalues(task.model, task.tracked, candidates, bases, advance=lambda n: None,
                                              **fit)
    q_a, q_s = bases[LAYER]
    expected = sum((q_s.T @ grad @ q_a) ** 2 for _, _, grad in terms) / len(candidates)
    torch.testing.assert_close(eigenvalues[LAYER], expected, rtol=1e-9, atol=0)


def test_inverse_equals_explicit_kronecker_inverse(setup, task):
    model, candidates, anchors = setup
    factors = _ekfac().factors(tracked_linears(model, task.tracked), candidates, task)
    vectors = torch.stack([_explicit(model, x)[2] for x in anchors])
    damping = factors.damping(LAYER, factor=0.1)
    assert damping == pytest.approx(0.1 * factors.eigenvalues[LAYER].mean().item())
    expected = _kronecker_solve(factors.bases[LAYER], factors.eigenvalues[LAYER], damping, vectors)
    torch.testing.assert_close(factors.inverse(LAYER, vectors, damping), expected, rtol=1e-8, atol=0)


def test_scores_are_preconditioned_anchor_gradients_dotted(setup, task):
    model, candidates, anchors = setup
    factors = _ekfac().factors(tracked_linears(model, task.tracked), candidates, task)
    damping = factors.damping(LAYER, factor=0.1)
    anchor_grads = torch.stack([_explicit(model, x)[2] for x in anchors])
    candidate_grads = torch.stack([_explicit(model, z)[2] for z in candidates])
    preconditioned = _kronecker_solve(factors.bases[LAYER], factors.eigenvalues[LAYER], damping, anchor_grads)
    expected = torch.einsum("noi,moi->nm", preconditioned, candidate_grads).numpy()

    pairs = _ekfac(aggregate="fraction_positive", batch_size=5).score(task)
    np.testing.assert_allclose(pairs.per_anchor, expected, rtol=1e-8)
    np.testing.assert_array_equal(pairs.values, (expected > 0).mean(axis=0))
    mean = _ekfac(batch_size=5).score(task)
    np.testing.assert_allclose(mean.values, expected.mean(axis=0), rtol=1e-8)
    assert mean.per_anchor is None
    kept = _ekfac(per_anchor=True, batch_size=5).score(task)
    np.testing.assert_allclose(kept.per_anchor, expected, rtol=1e-8)
    np.testing.assert_allclose(kept.values, expected.mean(axis=0), rtol=1e-8)


def _exact_gauss_newton(model, sequences):
    """``(1/M) Σ_i Σ_t J_tᵀ (diag p_t − p_t p_tᵀ) J_t / T_i²``, ``J_t`` the Jacobian of the logits
    predicting answer token ``t`` with respect to the layer's weight: the Gauss–Newton matrix of
    the pseudo-gradients of ``L_i`` (the mean over ``T_i`` answer tokens) that EK-FAC samples,
    ``E_y[∇L_i ∇L_iᵀ]`` computed exactly."""
    from torch.func import functional_call, jacfwd

    weight = _layer(model).weight.detach()
    total = torch.zeros(weight.numel(), weight.numel(), dtype=torch.float64)
    for seq in sequences:
        ids = torch.tensor([seq.ids])

        def logits(w, ids=ids, seq=seq):
            return functional_call(model, {f"{LAYER}.weight": w}, (ids,)).logits[0, seq.answer_start - 1:-1]

        with torch.no_grad():
            p = logits(weight).softmax(-1)
        jac = jacfwd(logits)(weight).reshape(len(p), p.shape[-1], -1)  # (T, V, out*in)
        rows = (p.sqrt()[..., None] * jac).flatten(0, 1)  # Σ_t J_tᵀ diag(p_t) J_t = rowsᵀ rows
        mean = torch.einsum("tv,tvk->tk", p, jac)  # p_tᵀ J_t
        total += (rows.T @ rows - mean.T @ mean) / len(p) ** 2
    return total / len(sequences)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # inside torch.func
def test_correlates_with_exact_gauss_newton(setup, task):
    """Every answer has the same length, so the Gauss–Newton matrix of the objective
    ``(1/M) Σ L_i`` (weights ``1/T_i``) and the Fisher of its sampled pseudo-gradients (weights
    ``1/T_i²``, what EK-FAC estimates) are proportional and, with damping relative to the mean
    eigenvalue, rank pairs identically. Measured here: 0.95 on the scores, 0.84 per pair (grad_ip:
    0.81 and 0.67). What is left is EK-FAC's Kronecker eigenbasis, not label sampling: fitting on
    eight times the draws moved such figures by under 0.02 in our trials."""
    model, candidates, anchors = setup
    assert {len(s.answer) for s in candidates} == {ANSWER}
    gn = _exact_gauss_newton(model, candidates).detach()
    damping = 0.1 * torch.trace(gn) / len(gn)  # the same rule: 0.1 x the mean eigenvalue
    anchor_grads = torch.stack([_explicit(model, x)[2].flatten() for x in anchors])
    candidate_grads = torch.stack([_explicit(model, z)[2].flatten() for z in candidates])
    exact = torch.linalg.solve(gn + damping * torch.eye(len(gn), dtype=gn.dtype), anchor_grads.T).T @ candidate_grads.T
    exact = exact.numpy()
    plain = (anchor_grads @ candidate_grads.T).numpy()
    pairs = _ekfac(aggregate="fraction_positive").score(task).per_anchor
    scores = _ekfac().score(task).values

    rho_scores = spearmanr(scores, exact.mean(axis=0)).statistic
    rho_pairs = spearmanr(pairs.ravel(), exact.ravel()).statistic
    assert rho_scores >= 0.9, rho_scores
    assert rho_scores > spearmanr(plain.mean(axis=0), exact.mean(axis=0)).statistic  # the curvature counts
    assert rho_pairs > spearmanr(plain.ravel(), exact.ravel()).statistic


def test_infinite_damping_gives_grad_ip(task):
    scores = _ekfac(damping=1e12).score(task)
    grad_ip = GradIpValuator().score(task)
    np.testing.assert_allclose(scores.values * 1e12, grad_ip.values, rtol=1e-6)
    assert np.argsort(scores.values, kind="stable").tolist() == np.argsort(grad_ip.values, kind="stable").tolist()


def test_sampled_labels_follow_the_model_and_the_seed(setup, task):
    model, candidates, _ = setup
    first = ekfac.draws(candidates, 3)
    assert all(torch.equal(a, b) for a, b in zip(first, ekfac.draws(candidates, 3)))
    assert not torch.equal(first[0], ekfac.draws(candidates, 4)[0])
    assert [len(d) for d in first] == [len(s.answer) for s in candidates]

    from dvbench.harness.lm.loglik import sample_labels
    logp = torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64).log().expand(60_000, 3)
    labels = sample_labels(logp, torch.rand(60_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    np.testing.assert_allclose(torch.bincount(labels[:, 0], minlength=3).numpy() / 60_000, [0.1, 0.6, 0.3], atol=0.01)
    assert sample_labels(logp[:2], torch.tensor([0.0, 1 - 1e-16]))[:, 0].tolist() == [0, 2]


def test_batching_does_not_change_the_scores(task):
    one = _ekfac(batch_size=1).score(task).values
    np.testing.assert_allclose(_ekfac(batch_size=7).score(task).values, one, rtol=1e-9)


def test_factors_are_saved_reused_and_resumed(task, tmp_path, monkeypatch):
    work = ValuationTask(task.candidates, task.anchors, task.model, seed=task.seed, template=task.template,
                         tracked=task.tracked, work=tmp_path / "work")
    first = _ekfac().score(work)
    assert sorted(p.name for p in work.work.iterdir() if not p.name.startswith("dots-")) == [  # the running sums gone
        plugin.BASES, plugin.BASES + ".sha256", plugin.EIGENVALUES, plugin.EIGENVALUES + ".sha256"]

    def refit(*args, **kwargs):
        raise AssertionError("refitted saved factors")

    monkeypatch.setattr(ekfac, "covariances", refit)
    monkeypatch.setattr(ekfac, "corrected_eigenvalues", refit)
    assert np.array_equal(_ekfac().score(work).values, first.values)
    assert not np.array_equal(_ekfac(damping_factor=1.0).score(work).values, first.values)

    monkeypatch.undo()
    (work.work / plugin.EIGENVALUES).unlink()  # interrupted after the eigendecomposition
    monkeypatch.setattr(ekfac, "covariances", refit)
    assert np.array_equal(_ekfac().score(work).values, first.values)


def test_sharding_does_not_change_the_scores(task):
    """Four shards of the fit and the scoring (7, 7, 7, 3 candidates) against one: the same up to
    the order of the sums."""
    one = _ekfac(batch_size=5).score(task)
    four = _ekfac(batch_size=5, shard_size=7).score(task)
    np.testing.assert_allclose(four.values, one.values, rtol=1e-9)
    pairs = _ekfac(batch_size=5, shard_size=7, aggregate="fraction_positive").score(task)
    np.testing.assert_allclose(pairs.per_anchor.mean(axis=0), one.values, rtol=1e-9)


class Stopping(LocalExecutor):
    """In process, in order, recording each unit's size; raises :class:`KeyboardInterrupt` in
    place of unit number ``stop`` (from 0) of the first map whose units it counts to it."""

    def __init__(self, stop=None):
        self.stop, self.sizes = stop, []

    def map(self, fn, units):
        for unit in units:
            if len(self.sizes) == self.stop:
                raise KeyboardInterrupt
            self.sizes.append(len(unit))
            yield fn(unit)


@pytest.mark.parametrize("stop", [2, 6])  # 4 shards a pass: in the covariance pass; in the eigenvalue correction
def test_a_pass_interrupted_resumes_from_its_running_sum_to_the_same_bytes(task, tmp_path, stop):
    def run(folder, executor):
        work = ValuationTask(task.candidates, task.anchors, task.model, seed=task.seed, template=task.template,
                             tracked=task.tracked, work=folder, executor=executor)
        return _ekfac(batch_size=5, shard_size=7).score(work)

    whole = run(tmp_path / "whole", LocalExecutor())
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", Stopping(stop))
    running = ekfac.EIGENVALUE_SUMS if stop > 4 else ekfac.COVARIANCE_SUMS
    assert safe_open(str(tmp_path / "cut" / running), "pt").get_tensor(BLOCKS).item() == 2  # shards summed
    resumed = Stopping()
    again = run(tmp_path / "cut", resumed)
    passes_after = 2 if running == ekfac.COVARIANCE_SUMS else 1  # the correction and the scoring, or the scoring
    assert resumed.sizes == [7, 3] + [7, 7, 7, 3] * passes_after  # the cut pass's last two shards, then the rest
    assert again.values.tobytes() == whole.values.tobytes()
    for name in (plugin.BASES, plugin.EIGENVALUES):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (tmp_path / "cut" / running).exists()


def test_contract(task):
    check_valuator(EkfacValuator, task=task)


def test_labels_true_may_be_written_unquoted(tmp_path):
    """YAML reads a bare ``true`` as a boolean; as ``labels`` it means the choice ``"true"``, and a
    bare ``false`` is no choice at all."""
    spec = tmp_path / "spec.yaml"

    def load(labels):
        spec.write_text("name: e\ndata: {generated: {candidates: 4, anchors: 1, eval: 0}}\n"
                        f"valuators:\n  e: {{use: ekfac, labels: {labels}}}\n")
        return load_spec(spec)

    assert load("true").valuators["e"].plugin.config.labels == "true"
    assert load('"true"').valuators["e"].plugin.config.labels == "true"
    assert load("sampled").valuators["e"].plugin.config.labels == "sampled"
    with pytest.raises(ConfigError, match=r"valuators\.e\.labels \(line 4\): expected 'sampled' or 'true'; got False"):
        load("false")


def test_auto_backs_off_in_the_fit_when_a_batch_runs_out_of_memory(setup, task):
    """The covariance pass on a model that runs out of memory above 2 rows per forward: ``auto``
    halves from the CPU's 8 to 2, and the covariances are still their definitions."""
    from dvbench.harness.lm.models import resident

    model, candidates, _ = setup
    sizes = Sizes({"batch_size": ("auto", 8, 64)}, device="cpu", what="test")
    with out_of_memory_above(resident(task.model)[0], 2):
        covs = ekfac.covariances(task.model, task.tracked, candidates, labels=None, sizes=sizes, shard_size=64,
                                 files=WorkFiles(None), advance=lambda n: None)
    terms = [_explicit(model, s, None) for s in candidates]
    tokens = sum(len(s.ids) for s in candidates)
    torch.testing.assert_close(covs[LAYER][0], sum(a.T @ a for a, _, _ in terms) / tokens, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(covs[LAYER][1], sum(g.T @ g for _, g, _ in terms) / tokens, rtol=1e-10, atol=1e-14)
    assert sizes["batch_size"] == 2
