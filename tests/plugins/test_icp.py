"""ICP against a naive per-pair computation: one full forward per (z, x), no batching, no cache."""

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from dvbench.harness.data.generated import generate
from dvbench.harness.lm import oneshot
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.progress import Progress
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.testing import check_valuator, out_of_memory_above, reference_logprobs
from dvbench.plugins.valuators.icp import IcpValuator


@pytest.fixture(scope="module")
def task(tiny_model_dir):
    data = generate(7, 5, 0, seed=11)
    return ValuationTask(data["candidates"], data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain"))


def naive(task):
    """``s_os - s_zs`` (anchors x candidates), each score from its own unpadded full forward."""
    model, tokenizer = load_model(task.model)
    enc = Encoder(tokenizer, task.template)

    def mean_logprob(seq):
        with torch.no_grad():
            return reference_logprobs(model, seq).mean().item()

    zero = np.array([mean_logprob(enc.zero_shot(x)) for x in task.anchors])
    one = np.array([[mean_logprob(enc.one_shot(z, x)) for z in task.candidates] for x in task.anchors])
    return one - zero[:, None]


@pytest.fixture(scope="module")
def expected(task):
    return naive(task)


def _icp(**config):
    return IcpValuator(IcpValuator.Config(**config))


@pytest.mark.parametrize("prefix_cache", [True, False])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_equals_the_naive_per_pair_computation(task, expected, prefix_cache, padding_side, batch_size):
    scores = _icp(prefix_cache=prefix_cache, padding_side=padding_side, batch_size=batch_size).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=0, atol=1e-10)
    assert scores.values.tolist() == (expected > 0).mean(axis=0).tolist()
    stats = dict(scores.stats)
    assert stats.pop("noise_floor") < 1e-9 and stats.pop("below_noise_floor") == 0  # float64: no pair near rounding
    assert stats == {"pairs": 35, "ties": 0, "cut_answers": 0, "cut_demonstrations": 0, "cut_queries": 0,
                     "batch_size": batch_size, "max_batch_tokens": 16384}  # the sizes it ran at, recorded


def test_mean_difference_and_details(task, expected):
    scores = _icp(aggregate="mean_difference").score(task)
    np.testing.assert_allclose(scores.values, expected.mean(axis=0), rtol=0, atol=1e-10)
    d = scores.details
    derived = (d["one_shot_sum"] - d["zero_shot_sum"][:, None]) / d["answer_tokens"][:, None]
    np.testing.assert_allclose(derived, expected, rtol=0, atol=1e-10)


def test_a_token_budget_smaller_than_a_batch_gives_the_same_scores(task, expected):
    scores = _icp(max_batch_tokens=150).score(task)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=0, atol=1e-10)


def test_truncated_demonstrations_are_cut_from_the_left_and_counted(task):
    lengths = [len(Encoder(load_model(task.model)[1], task.template).zero_shot(x).ids) for x in task.anchors]
    limit = max(lengths) + 6  # the longest anchor leaves room for 6 demonstration tokens only
    cut = ValuationTask(task.candidates, task.anchors, task.model,
                        template=Template(name="plain", max_length=limit, max_answer_tokens=40))
    expected = naive(cut)
    scores = _icp().score(cut)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=0, atol=1e-10)
    assert scores.stats["cut_demonstrations"] > 0 and scores.stats["cut_queries"] == 0
    # the anchors' answers are never cut: their token counts are the untruncated ones
    full = Encoder(load_model(task.model)[1], Template(name="plain"))
    assert scores.details["answer_tokens"].tolist() == [len(full.zero_shot(x).answer) for x in task.anchors]


def test_a_demonstration_cut_away_entirely_ties_exactly(task):
    enc = Encoder(load_model(task.model)[1], task.template)
    limit = max(len(enc.zero_shot(x).ids) for x in task.anchors)  # no room for any demonstration
    cut = ValuationTask(task.candidates, task.anchors, task.model,
                        template=Template(name="plain", max_length=limit, max_answer_tokens=40))
    scores = _icp().score(cut)
    assert scores.stats["ties"] >= len(task.candidates)  # the longest anchor ties with every candidate
    assert (scores.per_anchor == 0).sum() == scores.stats["ties"]


class Counting(Progress):
    """Records each task's total and how far it advanced."""

    def __init__(self):
        self.seen = {}

    @contextmanager
    def task(self, description, total, unit="items"):
        self.seen[description] = [total, 0]

        def advance(n=1):
            self.seen[description][1] += n
        yield advance


def test_progress_counts_pairs_and_shards_resume(task, expected, tmp_path, monkeypatch):
    progress = Counting()
    work = ValuationTask(task.candidates, task.anchors, task.model, template=task.template,
                         progress=progress, work=tmp_path / "work")
    first = _icp(shard_size=3).score(work)
    assert list(progress.seen.values()) == [[35, 35]]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        f"{name}.npz{hashed}" for name in ("noise_floor", "one_shot-00000000", "one_shot-00000003",
                                   "one_shot-00000006", "zero_shot")
        for hashed in ("", ".sha256")]

    (tmp_path / "work" / "one_shot-00000003.npz").unlink()  # as if killed while computing it
    pairs = []
    real = oneshot.prefix_loglik
    monkeypatch.setattr(oneshot, "prefix_loglik", lambda model, prefixes, items, **k:
                        pairs.extend(items) or real(model, prefixes, items, **k))
    again = _icp(aggregate="mean_difference", shard_size=3).score(work)
    assert len(pairs) == 3 * 5  # only the missing shard's three candidates were computed
    assert np.array_equal(again.per_anchor, first.per_anchor)
    np.testing.assert_allclose(again.values, expected.mean(axis=0), rtol=0, atol=1e-10)


def test_contract(task):
    scores = check_valuator(IcpValuator, task=task)
    assert scores.per_anchor.shape == (5, 7) and scores.anchor_ids == tuple(a.id for a in task.anchors)


def test_no_anchors_is_an_error(task):
    with pytest.raises(ValueError, match="at least one anchor"):
        _icp().score(ValuationTask(task.candidates, (), task.model))


SHARED = Path(__file__).parents[2].parent / "shared" / "data" / "alpaca_gpt4"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the project")
def test_real_pairs_on_the_embedded_model_equal_the_naive_computation():
    from dvbench.harness.data.files import load_examples

    candidates = load_examples(SHARED / "candidates_sample.jsonl")[:3]
    anchors = load_examples(SHARED / "kmeans100_anchors.jsonl")[:4]
    task = ValuationTask(candidates, anchors, ModelRef("embedded"), template=Template(max_length=512, max_answer_tokens=200))
    expected = naive(task)
    for config in ({}, {"padding_side": "left", "batch_size": 3}):
        np.testing.assert_allclose(_icp(**config).score(task).per_anchor, expected, rtol=0, atol=1e-4)


def test_auto_backs_off_when_a_batch_runs_out_of_memory(task, expected):
    """A model that runs out of memory on more than 4 rows per forward, as a small GPU would:
    ``auto`` halves from its start (64 on the CPU) and the scores are still the naive ones."""
    from dvbench.harness.lm.models import resident

    lines = []
    with out_of_memory_above(resident(task.model)[0], 4):
        logged = ValuationTask(task.candidates, task.anchors, task.model, template=task.template, log=lines.append)
        scores = _icp(batch_size="auto", max_batch_tokens="auto").score(logged)
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=0, atol=1e-10)
    assert scores.stats["batch_size"] == 4 and scores.stats["max_batch_tokens"] == 16384 // 16
    assert lines[0] == "valuators.icp: out of memory on cpu; running the unit again at batch_size 32, max_batch_tokens 8192"
