"""grad_ip and one_step on the embedded model, each against its reference in the same run.

    python -m pytest benchmarks/test_gradients.py --benchmark-columns=mean,rounds

Rows: Alpaca-GPT4 rows of 90-110 tokens (../shared/data; dvbench's generated data when absent),
N = 32 anchors.

- grad_ip, mean aggregate, M = 16 candidates: the candidate phase (one forward and backward
  each, the anchors' mean gradient formed beforehand) against a plain forward over the same
  candidates in the same batches (the model's own forward; dvbench's answer-only forward is
  reported beside it), and the whole valuator against the paper's released loop:
  for each batch of 2 anchors, recompute every candidate's gradient and dot it with the two
  anchors'. That loop is linear in its anchor batches; 2 of its 16 are timed and the time
  scaled by 8.
- one_step, M = 4 candidates: against ICP on the same pairs, with the time spent restoring the
  weights, and against the paper's released approach: reload the checkpoint for every
  candidate (here ``load_model`` from dvbench's converted folder), step, evaluate.
"""


import pytest
import torch

from dvbench.harness.lm import products
from dvbench.harness.lm.grads import per_example_grads, tracked_linears
from dvbench.harness.lm.loglik import answer_loglik, collate
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.lm.batching import Sizes
from dvbench.harness.progress import Progress
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.plugins.valuators.grad_ip import GradIpValuator
from dvbench.plugins.valuators.icp import IcpValuator
from dvbench.plugins.valuators.one_step import OneStepValuator

N, M_GRAD, M_STEP = 32, 16, 4
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(embedded, benchmark_rows):
    model, tokenizer = embedded
    encoder = Encoder(tokenizer, Template())
    pool = benchmark_rows(N + M_GRAD)
    anchors, candidates = tuple(pool[:N]), tuple(pool[N:N + M_GRAD])
    linears = tracked_linears(model)
    OneStepValuator().score(ValuationTask(candidates[:1], anchors[:2], ModelRef("embedded")))  # warm-up
    return model, encoder, linears, anchors, candidates


def _timed(benchmark, name, fn):
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    TIMES[name] = benchmark.stats.stats.mean
    return result


def plain_forward(model, sequences, batch_size=8):
    """The model's own forward (logits for every position), in the same batches."""
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            batch = collate(sequences[start:start + batch_size])
            model(input_ids=batch.ids, attention_mask=batch.mask)


def test_plain_forward(benchmark, setup):
    model, encoder, _, _, candidates = setup
    sequences = [encoder.training(z) for z in candidates]
    _timed(benchmark, "forward", lambda: plain_forward(model, sequences))


def test_answer_only_forward(benchmark, setup):
    model, encoder, _, _, candidates = setup
    sequences = [encoder.training(z) for z in candidates]
    _timed(benchmark, "answer_forward", lambda: answer_loglik(model, sequences, batch_size=8))


def test_grad_ip_candidate_phase(benchmark, setup):
    model, encoder, linears, anchors, candidates = setup
    batch_size = GradIpValuator.Config().batch_size
    sizes = Sizes({"batch_size": (batch_size, batch_size, batch_size)}, device="cpu", what="benchmark")
    mean = products.anchor_mean(model, linears, [encoder.training(x) for x in anchors], sizes=sizes,
                                progress=Progress(), label="grad_ip")
    sequences = [encoder.training(z) for z in candidates]
    _timed(benchmark, "grad_ip_candidates",
           lambda: products.candidate_dots(model, linears, mean, sequences, batch_size=batch_size))


def test_grad_ip_whole(benchmark, setup):
    _, _, _, anchors, candidates = setup
    task = ValuationTask(candidates, anchors, ModelRef("embedded"))
    TIMES["grad_ip_values"] = _timed(benchmark, "grad_ip", lambda: GradIpValuator().score(task).values)


def paper_loop(model, encoder, linears, anchors, candidates, batches):
    """The release's loop for the first ``batches`` batches of 2 anchors: products per pair."""
    out = []
    for b in range(batches):
        pair = [encoder.training(x) for x in anchors[2 * b:2 * b + 2]]
        held = per_example_grads(model, pair, linears)
        for z in candidates:
            grads = per_example_grads(model, [encoder.training(z)], linears)
            out.append(sum(torch.einsum("noi,oi->n", held[n], grads[n][0]) for n in linears))
    return out


def test_grad_ip_paper_loop(benchmark, setup):
    model, encoder, linears, anchors, candidates = setup
    _timed(benchmark, "paper_2_of_16", lambda: paper_loop(model, encoder, linears, anchors, candidates, 2))


def test_grad_ip_ratios(record_property):
    forward_ratio = TIMES["grad_ip_candidates"] / TIMES["forward"]
    paper_ratio = TIMES["paper_2_of_16"] * (N // 2) / 2 / TIMES["grad_ip"]
    record_property("grad_ip_candidates_over_forward", round(forward_ratio, 2))
    record_property("grad_ip_candidates_over_answer_only_forward", round(TIMES["grad_ip_candidates"] / TIMES["answer_forward"], 2))
    record_property("paper_loop_over_grad_ip", round(paper_ratio, 2))
    assert forward_ratio <= 3.5 and paper_ratio >= 8, (forward_ratio, paper_ratio)


def test_one_step(benchmark, setup):
    _, _, _, anchors, candidates = setup
    task = ValuationTask(candidates[:M_STEP], anchors, ModelRef("embedded"))
    _timed(benchmark, "one_step", lambda: OneStepValuator().score(task))


def test_icp_same_pairs(benchmark, setup):
    _, _, _, anchors, candidates = setup
    task = ValuationTask(candidates[:M_STEP], anchors, ModelRef("embedded"))
    _timed(benchmark, "icp", lambda: IcpValuator().score(task))


def test_restore(benchmark, setup):
    model, _, linears, _, _ = setup
    weights = [m.weight for m in linears.values()]
    saved = [w.detach().clone() for w in weights]

    def restore():
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)

    _timed(benchmark, "restore", lambda: [restore() for _ in range(10)])
    TIMES["restore"] /= 10


def test_reload_per_candidate(benchmark, setup):
    """The release's approach: a fresh model for every candidate, stepped, then evaluated."""
    _, encoder, _, anchors, candidates = setup
    anchor_seqs = [encoder.zero_shot(x) for x in anchors]
    valuator = OneStepValuator()

    def run():
        for z in candidates[:M_STEP]:
            model, _ = load_model(ModelRef("embedded"))
            valuator._step(model, tracked_linears(model), encoder.training(z))
            answer_loglik(model, anchor_seqs, batch_size=64)

    _timed(benchmark, "reload", run)


def test_one_step_ratios(record_property):
    per_candidate = TIMES["one_step"] / M_STEP
    ratios = {"one_step_over_icp": TIMES["one_step"] / TIMES["icp"],
              "restore_share_of_candidate": TIMES["restore"] / per_candidate,
              "reload_over_one_step": TIMES["reload"] / TIMES["one_step"]}
    for name, value in ratios.items():
        record_property(name, round(value, 3))
    assert ratios["one_step_over_icp"] <= 1.3 and ratios["restore_share_of_candidate"] <= 0.05, ratios


@pytest.mark.parametrize("name, valuator", [
    ("grad_ip_mean", GradIpValuator()),
    ("grad_ip_fraction_positive", GradIpValuator(GradIpValuator.Config(aggregate="fraction_positive"))),
    ("one_step", OneStepValuator()),
], ids=lambda v: v if isinstance(v, str) else "")
def test_peak_memory(setup, name, valuator, record_property, peak_rss_mib):
    """Peak resident memory added by one ``score`` (its own model load included), M = 4, N = 32."""
    _, _, _, anchors, candidates = setup
    task = ValuationTask(candidates[:4], anchors, ModelRef("embedded"))
    record_property(f"peak_rss_MiB_{name}", peak_rss_mib(lambda: valuator.score(task)))
