"""ICP's two reference implementations and its FLOP count, for the benchmarks that time dvbench's
schedule against them (benchmarks/test_icp.py on the CPU, benchmarks/test_gpu.py on a GPU).

- :func:`naive`: one full forward per sequence (each anchor alone, then each pair), no batching,
  no cache, full-vocabulary float32 log-softmax;
- :func:`paper`: the paper's batched method: batches of sequences (demonstration + anchor, and
  the anchors alone) sorted by length, right-padded, full-vocabulary log-softmax, no prefix
  sharing.

Both return the per-pair differences ``(s_os − s_zs)`` per answer token, ``(anchors,
demonstrations)``, as ``IcpValuator(...).score(task).per_anchor`` does with ``aggregate:
mean_difference``. :func:`schedule_flops` counts what the shared-prefix schedule must compute,
padding excluded: 2 × (the blocks' linear-layer parameters) per token processed (prefixes,
continuations, zero-shot sequences), 2 × hidden × vocab per answer token (the output head), and
4 × hidden × layers per (query token, key) pair of attention.
"""

import numpy as np
import torch

from dvbench.harness.lm.loglik import collate


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


def paper(model, encoder, task, batch_size=32):
    seqs = [encoder.zero_shot(x) for x in task.anchors] + \
        [encoder.one_shot(z, x) for x in task.anchors for z in task.candidates]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    sums = np.zeros(len(seqs))
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = collate([seqs[i] for i in chosen], device=device)
            logp = model(input_ids=batch.ids, attention_mask=batch.mask).logits.float().log_softmax(-1)
            token = logp[batch.rows, batch.cols - 1].gather(-1, batch.ids[batch.rows, batch.cols][:, None])[:, 0]
            sums[chosen] = torch.zeros(len(chosen), device=device).index_add(0, batch.rows, token).cpu().numpy()
    n = len(task.anchors)
    return _differences(sums[:n], sums[n:].reshape(n, -1), encoder, task.anchors)


def schedule_flops(model, encoder, task):
    config = model.config
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings())
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    tokens = keys = 0
    for x in task.anchors:
        zero = encoder.zero_shot(x)
        tokens += len(zero.ids)
        keys += len(zero.ids) * (len(zero.ids) + 1) // 2
    answers = sum(len(encoder.zero_shot(x).answer) for x in task.anchors) * (len(task.candidates) + 1)
    for z in task.candidates:
        p = encoder.one_shot(z, task.anchors[0]).prefix
        tokens += p
        keys += p * (p + 1) // 2
        for x in task.anchors:
            s = len(encoder.zero_shot(x).ids) - len(encoder.bos)
            tokens += s
            keys += s * p + s * (s + 1) // 2
    return 2 * linear * tokens + 2 * hidden * vocab * answers + 4 * hidden * layers * keys
