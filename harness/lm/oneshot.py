"""One-shot answer log-likelihoods: every anchor after every demonstration, planned so that each
demonstration's prefix runs once.

:func:`one_shot_loglik` encodes each pair ``(z, x)`` with the encoder's one-shot template and
sorts it into one of three kinds, by what truncation left of the demonstration
(:meth:`~dvbench.harness.lm.tokens.Encoder.one_shot`):

- **shared**: the whole demonstration ``[BOS] z.query z.answer separator`` is kept, so it is a
  prefix common to every anchor; the pair is scored as a continuation of that prefix
  (:func:`~dvbench.harness.lm.prefix.prefix_loglik`), the prefix's keys and values computed once;
- **alone**: the template had to cut the demonstration (or the prefix cache is off); the pair's
  own full sequence is scored (:func:`~dvbench.harness.lm.loglik.answer_loglik`);
- **zero-shot**: the demonstration was cut away entirely, so the sequence *is* the anchor's
  zero-shot sequence and its value is the given zero-shot one, exactly (the pair ties).

Demonstrations go in groups of about ``GROUP`` batches of pairs; within a group the shared pairs
are sorted by length (longest first, stably), so batches hold similar lengths. Every kind equals
the naive per-pair forward (tests/plugins/test_icp.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import numpy as np

from dvbench.harness.lm.loglik import answer_loglik
from dvbench.harness.lm.prefix import prefix_loglik
from dvbench.harness.lm.tokens import Encoder, Sequence
from dvbench.harness.records import Example

GROUP = 1  # batches of pairs per group of demonstrations whose prefixes run together


def one_shot_loglik(
    model,
    encoder: Encoder,
    demonstrations: Seq[Example],
    anchors: Seq[Example],
    order: Seq[int],
    zero_shot_sum: np.ndarray,
    *,
    batch_size: int = 64,
    max_tokens: int = 16384,
    padding_side: str = "right",
    prefix_cache: bool = True,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The summed answer log-probability of every anchor after every demonstration: ``(anchors,
    demonstrations)``.

    ``order``: the anchors' indices, longest zero-shot sequence first (computed once by the
    caller, as it is the same for every block of demonstrations). ``zero_shot_sum``: the
    anchors' zero-shot sums (:func:`~dvbench.harness.lm.loglik.answer_loglik`), the value of a
    pair whose demonstration was cut away. ``batch_size`` and ``max_tokens`` bound each forward
    (pairs; tokens, prefix keys included); ``prefix_cache=False`` scores every pair alone (same
    values, slower). ``advance(n)`` is called with the pairs done after each group. Truncations
    are counted by ``encoder`` as usual.
    """
    sums = np.empty((len(anchors), len(demonstrations)))
    group = max(1, -(-GROUP * batch_size // len(anchors)))
    for first in range(0, len(demonstrations), group):
        prefixes, shared, alone = [], [], []
        for j in range(first, min(first + group, len(demonstrations))):
            query, answer = encoder.pieces(demonstrations[j])
            whole = len(encoder.bos) + len(query) + len(answer) + len(encoder.separator)
            for i in order:
                seq = encoder.one_shot(demonstrations[j], anchors[i])
                if seq.prefix == len(encoder.bos):  # the demonstration was cut away: zero-shot
                    sums[i, j] = zero_shot_sum[i]
                elif prefix_cache and seq.prefix == whole and seq.answer_start > whole:
                    if not prefixes or prefixes[-1][0] != j:
                        prefixes.append((j, seq.ids[:whole]))
                    shared.append(((i, j), (len(prefixes) - 1, Sequence(seq.ids[whole:], seq.answer_start - whole))))
                else:
                    alone.append(((i, j), seq))
        if shared:
            shared.sort(key=lambda item: -len(item[1][1].ids))  # stable: same anchors side by side
            values = prefix_loglik(model, [p for _, p in prefixes], [item for _, item in shared],
                                   batch_size=batch_size, max_tokens=max_tokens, padding_side=padding_side)
            for ((i, j), _), value in zip(shared, values):
                sums[i, j] = value
        if alone:
            values = answer_loglik(model, [seq for _, seq in alone], batch_size=batch_size,
                                   padding_side=padding_side).sum
            for ((i, j), _), value in zip(alone, values):
                sums[i, j] = value
        if advance is not None:
            advance(len(anchors) * (min(first + group, len(demonstrations)) - first))
    return sums
