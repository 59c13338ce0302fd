"""ICP on the embedded model: dvbench's shared-prefix schedule against the naive per-pair loop
and against the paper's own method, same pairs, one run; then the FLOP rate and peak memory.

    python -m pytest benchmarks/test_icp.py --benchmark-columns=mean,rounds

Pairs: M = 4 demonstrations x N = 32 anchors, Alpaca-GPT4 rows of 90-110 tokens each under the
Alpaca template (../shared/data; dvbench's generated data when absent). Every implementation
computes the zero-shot scores too, and all three give the same per-pair differences.

- naive: one full forward per sequence (each anchor alone, then each pair), no batching, no
  cache, full-vocabulary float32 log-softmax;
- paper: batches of 32 sequences (demonstration + anchor, and the anchors alone) sorted by
  length, right-padded, full-vocabulary log-softmax, no prefix sharing;
- dvbench: ``IcpValuator`` with its defaults.

FLOPs assumed for the shared-prefix schedule (what it must do, padding excluded): 2 x (the
linear-layer parameters of the blocks) per token processed (prefixes, continuations, zero-shot
sequences), plus 2 x hidden x vocab per answer token (output head), plus 4 x hidden x layers per
(query token, key) pair of attention.
"""

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dvbench.harness.data.files import load_examples
from dvbench.harness.data.generated import generate
from dvbench.harness.lm.loglik import collate
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.plugins.valuators.icp import IcpValuator

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "alpaca_gpt4"
M, N = 4, 32
TIMES: dict[str, float] = {}
RESULTS: dict[str, np.ndarray] = {}


def _pool(encoder, count):
    if SHARED.is_dir():
        rows = load_examples(SHARED / "candidates_sample.jsonl")
        return [e for e in rows[:5000] if 90 <= len(encoder.zero_shot(e).ids) <= 110][:count]
    data = generate(count, 0, 0, families=("sorting", "facts", "dates"))
    return list(data["candidates"])


@pytest.fixture(scope="module")
def setup(embedded):
    model, tokenizer = embedded
    encoder = Encoder(tokenizer, Template())
    pool = _pool(encoder, M + 100)
    demos, anchors = pool[:M], pool[M:M + N]
    task = ValuationTask(tuple(demos), tuple(anchors), ModelRef("embedded"))
    IcpValuator().score(ValuationTask(tuple(demos[:1]), tuple(anchors[:4]), ModelRef("embedded")))  # warm-up
    return model, encoder, task, pool


def _differences(zero, one, encoder, anchors):
    counts = np.array([len(encoder.zero_shot(x).answer) for x in anchors])
    return (one - zero[:, None]) / counts[:, None]


def naive(model, encoder, task):
    device = next(model.parameters()).device

    def total(seq):
        ids = torch.tensor(seq.ids, device=device)
        with torch.inference_mode():
            logp = model(ids[None]).logits[0].float().log_softmax(-1)
        return logp[seq.answer_start - 1:-1].gather(-1, ids[seq.answer_start:, None]).sum().item()

    zero = np.array([total(encoder.zero_shot(x)) for x in task.anchors])
    one = np.array([[total(encoder.one_shot(z, x)) for z in task.candidates] for x in task.anchors])
    return _differences(zero, one, encoder, task.anchors)


def paper(model, encoder, task):
    seqs = [encoder.zero_shot(x) for x in task.anchors] + \
        [encoder.one_shot(z, x) for x in task.anchors for z in task.candidates]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    sums = np.zeros(len(seqs))
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), 32):
            chosen = order[start:start + 32]
            batch = collate([seqs[i] for i in chosen], device=device)
            logp = model(input_ids=batch.ids, attention_mask=batch.mask).logits.float().log_softmax(-1)
            token = logp[batch.rows, batch.cols - 1].gather(-1, batch.ids[batch.rows, batch.cols][:, None])[:, 0]
            sums[chosen] = torch.zeros(len(chosen), device=device).index_add(0, batch.rows, token).cpu().numpy()
    n = len(task.anchors)
    return _differences(sums[:n], sums[n:].reshape(n, -1), encoder, task.anchors)


def _timed(benchmark, name, fn):
    RESULTS[name] = benchmark.pedantic(fn, rounds=1, iterations=1)
    TIMES[name] = benchmark.stats.stats.mean


def test_icp_dvbench(benchmark, setup):
    model, encoder, task, _ = setup
    _timed(benchmark, "dvbench", lambda: IcpValuator().score(task).per_anchor)


def test_icp_naive_per_pair(benchmark, setup):
    model, encoder, task, _ = setup
    _timed(benchmark, "naive", lambda: naive(model, encoder, task))
    np.testing.assert_allclose(RESULTS["dvbench"], RESULTS["naive"], rtol=0, atol=1e-4)


def test_icp_paper_method(benchmark, setup):
    model, encoder, task, _ = setup
    _timed(benchmark, "paper", lambda: paper(model, encoder, task))
    np.testing.assert_allclose(RESULTS["dvbench"], RESULTS["paper"], rtol=0, atol=1e-4)


def _schedule_flops(model, encoder, task):
    config = model.config
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in n)
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    tokens = keys = 0
    for x in task.anchors:
        zero = encoder.zero_shot(x)
        tokens += len(zero.ids)
        keys += len(zero.ids) * (len(zero.ids) + 1) // 2
    answers = sum(len(encoder.zero_shot(x).answer) for x in task.anchors) * (M + 1)
    for z in task.candidates:
        p = encoder.one_shot(z, task.anchors[0]).prefix
        tokens += p
        keys += p * (p + 1) // 2
        for x in task.anchors:
            s = len(encoder.zero_shot(x).ids) - len(encoder.bos)
            tokens += s
            keys += s * p + s * (s + 1) // 2
    return 2 * linear * tokens + 2 * hidden * vocab * answers + 4 * hidden * layers * keys


def test_icp_ratios_and_flop_rate(setup, record_property):
    model, encoder, task, _ = setup
    a = torch.randn(4096, 576)
    b = torch.randn(576, 1536)
    a @ b
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    gemm = 10 * 2 * 4096 * 576 * 1536 / (time.perf_counter() - start)
    achieved = _schedule_flops(model, encoder, task) / TIMES["dvbench"]
    ratios = {"vs_naive": TIMES["naive"] / TIMES["dvbench"], "vs_paper": TIMES["paper"] / TIMES["dvbench"],
              "gemm_fraction": achieved / gemm}
    for name, value in {**ratios, "gemm_GFLOPs": gemm / 1e9, "achieved_GFLOPs": achieved / 1e9}.items():
        record_property(name, round(value, 3))
    assert ratios["vs_naive"] >= 1.7 and ratios["vs_paper"] >= 2.3 and ratios["gemm_fraction"] >= 0.55, ratios


@pytest.mark.parametrize("anchors", [32, 100])
def test_icp_peak_memory(setup, anchors, record_property, peak_rss_mib):
    _, _, task, pool = setup
    wide = ValuationTask(task.candidates[:2], tuple(pool[M:M + anchors]), task.model)
    record_property(f"peak_rss_MiB_N{anchors}", peak_rss_mib(lambda: IcpValuator().score(wide)))
