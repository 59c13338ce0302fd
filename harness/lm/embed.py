"""Mean-pooled hidden states: one vector per sequence, a layer's hidden states averaged over
the sequence's own tokens, what K-Means anchors are clustered on
(:mod:`dvbench.harness.stages.anchors`), or over its answer tokens only, what ``repsim``
compares (:mod:`dvbench.plugins.valuators.repsim`).

Nuggets (Li et al. 2024b), whose K-Means-100 anchors the paper uses, averaged over the padded
batch, padding positions included, so an example's embedding depended on the examples batched
with it. Here the attention mask weights the mean, and right padding under a causal mask leaves
every real token's state as an unpadded forward computes it: a batch gives each sequence its
one-at-a-time embedding, to rounding. Sums run in float32, float64 for a float64 model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import numpy as np
import torch

from dvbench.harness.errors import InputError
from dvbench.harness.lm import hf
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.tokens import Sequence


def mean_hidden(model, sequences: Seq[Sequence], *, layer: int = -1, batch_size: int = 16, answer_only: bool = False,
                key: str = "data.anchors.kmeans.layer", advance: Callable[[int], None] | None = None) -> np.ndarray:
    """``(len(sequences), hidden)``: each sequence's hidden states at ``layer`` (an index into
    the embeddings and the blocks' outputs, as :func:`~dvbench.harness.lm.hf.hidden_states`
    gives them: 0 the embeddings, -1 the last) averaged over its tokens (``answer_only``: its
    answer's, ``ids[answer_start:]``), in batches of ``batch_size``, longest first; rows follow
    the input order, float32 (float64 for a float64 model). ``sequences`` must not be empty.
    ``key`` names the option ``layer`` came from in the error for a layer outside the model.
    ``advance(n)`` is called after each batch."""
    depth = model.config.num_hidden_layers + 1
    if not -depth <= layer < depth:
        raise InputError(f"{key} is {layer}, but the model has {depth} hidden layers "
                         f"(embeddings and {depth - 1} blocks); give one in [{-depth}, {depth - 1}]")
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
    means = []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = collate([sequences[i] for i in chosen], "right", device)
            states = hf.hidden_states(model, batch.ids, batch.mask, batch.positions)[layer]
            dtype = torch.float64 if states.dtype == torch.float64 else torch.float32
            mask = batch.mask
            if answer_only:
                mask = torch.zeros_like(mask).index_put_((batch.rows, batch.cols), torch.ones_like(batch.rows))
            mask = mask.unsqueeze(-1).to(dtype)
            means.append((states.to(dtype) * mask).sum(1) / mask.sum(1))
            if advance is not None:
                advance(len(chosen))
    stacked = torch.cat(means).cpu().numpy()
    result = np.empty_like(stacked)
    result[order] = stacked
    return result
