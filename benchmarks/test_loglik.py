"""Answer log-likelihoods on the embedded model: dvbench (answer-only head and log-softmax)
against the naive implementation (full-vocabulary logits and float32 log-softmax over every
position, then gather), same batches, same sequences; and the peak memory of each.

    python -m pytest benchmarks/test_loglik.py --benchmark-columns=mean,stddev,rounds

Sequences: 16 one-shot sequences (4 demonstrations x 4 anchors, at most 256 tokens) of the
Alpaca-GPT4 data in ../shared/data when present, else of dvbench's generated data; batches of 8,
right padding.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from dvbench.harness.data.files import load_examples
from dvbench.harness.data.generated import generate
from dvbench.harness.lm.loglik import answer_loglik, collate
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "alpaca_gpt4"
BATCH = 8


@pytest.fixture(scope="module")
def sequences(embedded):
    if SHARED.is_dir():
        demos = load_examples(SHARED / "candidates_sample.jsonl")[:4]
        anchors = load_examples(SHARED / "kmeans100_anchors.jsonl")[:4]
    else:
        data = generate(4, 4, 0)
        demos, anchors = data["candidates"], data["anchors"]
    enc = Encoder(embedded[1], Template(max_length=256, max_answer_tokens=128))
    return [enc.one_shot(z, x) for z in demos for x in anchors]


def naive(model, sequences):
    """Full logits for every position, float32 log-softmax, then the answer tokens."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
    sums = np.zeros(len(sequences))
    with torch.inference_mode():
        for start in range(0, len(order), BATCH):
            chosen = order[start:start + BATCH]
            batch = collate([sequences[i] for i in chosen])
            logp = model(input_ids=batch.ids, attention_mask=batch.mask).logits.float().log_softmax(-1)
            token = logp[batch.rows, batch.cols - 1].gather(-1, batch.ids[batch.rows, batch.cols][:, None])[:, 0]
            sums[chosen] = torch.zeros(len(chosen)).index_add(0, batch.rows, token).numpy()
    return sums


def test_answer_loglik_dvbench(benchmark, embedded, sequences, record_property, peak_rss_mib):
    model = embedded[0]
    got = benchmark.pedantic(answer_loglik, (model, sequences), {"batch_size": BATCH}, rounds=5, warmup_rounds=1)
    np.testing.assert_allclose(got.sum, naive(model, sequences), rtol=1e-5)
    tokens = sum(len(s.ids) for s in sequences)
    record_property("tokens", tokens)
    record_property("answer_tokens", int(got.count.sum()))
    record_property("peak_rss_MiB", peak_rss_mib(lambda: answer_loglik(model, sequences, batch_size=BATCH)))


def test_answer_loglik_naive(benchmark, embedded, sequences, record_property, peak_rss_mib):
    benchmark.pedantic(naive, (embedded[0], sequences), rounds=5, warmup_rounds=1)
    record_property("peak_rss_MiB", peak_rss_mib(lambda: naive(embedded[0], sequences)))
