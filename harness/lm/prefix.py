"""Answer log-likelihoods of continuations of shared prefixes, each prefix computed once.

ICP scores every anchor after the same demonstration: ``[BOS] z.query z.answer separator`` is
one prefix for all of them. The prefixes of a group of demonstrations run in one batched
forward (left-padded); their keys and values are then gathered, row by row, into batched
forwards of the continuations (an anchor's header, query and answer), so each pair costs only
its continuation. Position ids continue after each row's own prefix and the attention mask
hides all padding, so the values equal :func:`~dvbench.harness.lm.loglik.answer_loglik` on the
full sequences, whatever the batch size, padding side or grouping. The cache itself is built
and read by :mod:`~dvbench.harness.lm.hf`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import numpy as np
import torch

from dvbench.harness.lm import hf
from dvbench.harness.lm.loglik import collate, per_example, token_logprobs
from dvbench.harness.lm.tokens import Sequence


SLACK = 0.15  # a run ends where a continuation is this much shorter than the run's longest


def chunks(lengths: Seq[int], prefix: int, batch_size: int, max_tokens: int) -> list[slice]:
    """Consecutive runs of at most ``batch_size`` continuations whose padded batch, ``prefix``
    keys included, stays within ``max_tokens`` and whose lengths differ by less than ``SLACK``
    (little padding); a lone continuation always forms a run."""
    runs, start = [], 0
    while start < len(lengths):
        end, width = start + 1, lengths[start]
        while end < len(lengths) and end - start < batch_size:
            if lengths[end] < (1 - SLACK) * width or lengths[end] > width / (1 - SLACK):
                break
            width = max(width, lengths[end])
            if (end + 1 - start) * (prefix + width) > max_tokens:
                break
            end += 1
        runs.append(slice(start, end))
        start = end
    return runs


def prefix_loglik(
    model,
    prefixes: Seq[Seq[int]],
    items: Seq[tuple[int, Sequence]],
    *,
    batch_size: int = 64,
    max_tokens: int = 16384,
    padding_side: str = "right",
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Summed answer log-probabilities of ``prefixes[k] + continuation`` for every item
    ``(k, continuation)``, in input order.

    A continuation's answer must start after at least one of its own tokens
    (``answer_start >= 1``). Items are batched in the given order: sort them by continuation
    length for the least padding.
    """
    if any(s.answer_start < 1 for _, s in items):
        raise ValueError("every continuation needs at least one token before its answer")
    device = next(model.parameters()).device
    with torch.inference_mode():
        head = collate([Sequence(tuple(p), len(p)) for p in prefixes], "left", device)
        layers = hf.prefix_keys_values(model, head.ids, head.mask, head.positions)
        lengths = head.mask.sum(1)
        sums = []
        for run in chunks([len(s.ids) for _, s in items], head.ids.shape[1], batch_size, max_tokens):
            rows = torch.tensor([k for k, _ in items[run]], device=device)
            batch = collate([s for _, s in items[run]], padding_side, device)
            mask = torch.cat([head.mask[rows], batch.mask], 1)
            hidden = hf.body(model, batch.ids, mask, batch.positions + lengths[rows, None],
                             cache=hf.gathered_cache(model, layers, rows))
            sums.append(per_example(batch, token_logprobs(model, batch, hidden)))
            if advance is not None:
                advance(batch.size)
    return torch.cat(sums).double().cpu().numpy() if sums else np.zeros(0)
