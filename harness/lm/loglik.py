"""Batched answer log-likelihoods: log-softmax only where an answer token is predicted.

The transformer body runs on the padded batch; the output head and the log-softmax run only on
the hidden states that predict answer tokens, in float32 (float64 for a float64 model), in
chunks of rows (log-softmax then gather: on a CPU, logit less logsumexp measured 40% slower, as
torch builds logsumexp from separate passes). No full-vocabulary logits are ever built for the
whole sequence. Under
autograd each chunk is checkpointed: only its hidden rows are saved for the backward, which
recomputes the chunk's logits and log-softmax (:data:`GRAD_HEAD_ROWS` rows at a time), so a
backward never holds more than one chunk's full-vocabulary arrays.

Left and right padding give the same values: position ids count real tokens only, and the
attention mask hides the padding. Requires a model whose logits are its output embedding
applied to the last hidden state (Llama, Mistral, Qwen, GPT-2, Pythia, ...); models that scale
or soft-cap their logits are refused (:func:`~dvbench.harness.lm.hf.check_model`).

:func:`answer_losses` is the differentiable ``L(θ, x)`` (mean answer NLL per sequence) that the
gradients, EK-FAC and the trainer share; :func:`answer_loglik` the batched, no-grad scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from dvbench.harness.lm import hf
from dvbench.harness.lm.tokens import Sequence

PAD_ID = 0  # any id works: padding is masked out
HEAD_ROWS = 1024  # answer positions per output-head chunk: bounds the logits at HEAD_ROWS x vocab
GRAD_HEAD_ROWS = 256  # the same under autograd, where a chunk's backward holds about four such arrays


@dataclass(frozen=True)
class Batch:
    """Padded sequences. ``rows, cols`` locate each answer token (in sequence order)."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor

    @property
    def size(self) -> int:
        return self.ids.shape[0]


def collate(sequences: Seq[Sequence], padding_side: str = "right", device: torch.device | str = "cpu") -> Batch:
    """Pad ``sequences`` on ``padding_side`` (``left`` or ``right``) into one batch."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if any(s.answer_start < 1 for s in sequences):
        raise ValueError("every sequence needs at least one token before its answer")
    width = max(len(s.ids) for s in sequences)
    ids = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    rows, cols = [], []
    for i, s in enumerate(sequences):
        start = width - len(s.ids) if padding_side == "left" else 0
        ids[i, start:start + len(s.ids)] = torch.tensor(s.ids)
        mask[i, start:start + len(s.ids)] = 1
        rows += [i] * len(s.answer)
        cols += range(start + s.answer_start, start + len(s.ids))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    to = dict(device=device)
    return Batch(ids.to(**to), mask.to(**to), positions.to(**to),
                 torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device))


def token_logprobs(
    model, batch: Batch, hidden: torch.Tensor | None = None, draws: torch.Tensor | None = None
) -> torch.Tensor:
    """``log p(token)`` of every answer token of ``batch``, in ``rows, cols`` order; differentiable.

    ``draws``: one uniform number in [0, 1) per answer token. The tokens scored are then not the
    batch's but labels sampled from the model's own predictive distribution at each answer
    position (inverse CDF: the first token whose cumulative probability exceeds the draw), the
    context staying the batch's. Given the draws, the labels do not depend on the batching.
    """
    targets = batch.ids[batch.rows, batch.cols]
    hidden = hf.body(model, batch.ids, batch.mask, batch.positions) if hidden is None else hidden
    grad = torch.is_grad_enabled() and (hidden.requires_grad or hf.head(model).weight.requires_grad)
    step = GRAD_HEAD_ROWS if grad else HEAD_ROWS
    chunks = []
    for start in range(0, len(batch.rows), step):
        rows = hidden[batch.rows[start:start + step], batch.cols[start:start + step] - 1]
        chosen = targets[start:start + step] if draws is None else draws[start:start + step]
        if grad:  # saves `rows` only; the backward recomputes this chunk's logits
            chunks.append(checkpoint(_chosen_logprobs, model, rows, chosen, draws is not None, use_reentrant=False))
        else:
            chunks.append(_chosen_logprobs(model, rows, chosen, draws is not None))
    return torch.cat(chunks)


def _chosen_logprobs(model, rows: torch.Tensor, chosen: torch.Tensor, sampled: bool) -> torch.Tensor:
    """``log p`` of one token per hidden row: ``chosen`` holds the tokens, or with ``sampled``
    the draws of :func:`sample_labels`."""
    logp = _head_logprobs(model, rows)
    labels = sample_labels(logp.detach(), chosen) if sampled else chosen[:, None]
    return logp.gather(-1, labels)[:, 0]


def _head_logprobs(model, rows: torch.Tensor) -> torch.Tensor:
    """The output head's log-softmax over the vocabulary for hidden ``rows``, in the head's
    dtype promoted to float32."""
    head = hf.head(model)
    dtype = torch.promote_types(head.weight.dtype, torch.float32)
    bias = None if head.bias is None else head.bias.to(dtype)
    return torch.nn.functional.linear(rows.to(dtype), head.weight.to(dtype), bias).log_softmax(-1)


def next_token_logprobs(
    model, prompts: Seq[Seq[int]], tokens: Seq[int], *, batch_size: int = 8,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``log p(t | prompt)`` for every prompt and every token ``t`` of ``tokens``: ``(prompts,
    tokens)``, one forward per prompt whatever the number of tokens."""
    hf.check_model(model)
    device = next(model.parameters()).device
    choices = torch.tensor(list(tokens), device=device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            batch = collate([Sequence(tuple(p) + (tokens[0],), len(p), 0) for p in chunk], "right", device)
            hidden = hf.body(model, batch.ids, batch.mask, batch.positions)[batch.rows, batch.cols - 1]
            out += [_head_logprobs(model, rows)[:, choices] for rows in hidden.split(HEAD_ROWS)]
            if advance is not None:
                advance(len(chunk))
    return torch.cat(out).double().cpu().numpy() if out else np.zeros((0, len(tokens)))


def sample_labels(logp: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """One label per row of ``logp``, as a ``(rows, 1)`` column: the inverse of the row's cumulative
    distribution at its draw."""
    cdf = logp.double().exp().cumsum(-1)
    u = draws.to(cdf.device, torch.float64)[:, None] * cdf[:, -1:]  # scaled by the total: no rounding overshoot
    return torch.searchsorted(cdf, u, right=True).clamp_(max=logp.shape[-1] - 1)


def per_example(batch: Batch, values: torch.Tensor) -> torch.Tensor:
    """Sum per-token ``values`` into one value per sequence of ``batch``."""
    return torch.zeros(batch.size, dtype=values.dtype, device=values.device).index_add(0, batch.rows, values)


def answer_losses(
    model, batch: Batch, hidden: torch.Tensor | None = None, draws: torch.Tensor | None = None
) -> torch.Tensor:
    """``L(θ, x_i)`` of docs/definitions.md § Data for every sequence of ``batch``: the mean NLL of its answer tokens;
    differentiable. The loss that gradients, EK-FAC and the trainer all use; ``hidden`` and
    ``draws`` as for :func:`token_logprobs`."""
    logp = token_logprobs(model, batch, hidden, draws)
    return -per_example(batch, logp) / per_example(batch, torch.ones_like(logp))


@dataclass(frozen=True)
class AnswerLogLik:
    """Per sequence: the answer's summed log-probability and its token count."""

    sum: np.ndarray
    count: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """The average log-probability per answer token: ``s_zs`` / ``s_os`` of docs/definitions.md § Zero-shot and one-shot scores."""
        return self.sum / self.count


def answer_loglik(
    model,
    sequences: Seq[Sequence],
    *,
    batch_size: int = 8,
    padding_side: str = "right",
    advance: Callable[[int], None] | None = None,
) -> AnswerLogLik:
    """Score the answers of ``sequences`` in batches of ``batch_size``, longest first (less
    padding); results follow the input order. ``advance(n)`` is called after each batch."""
    hf.check_model(model)
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
    batches = []  # kept on the device until the end: no synchronisation per batch
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = collate([sequences[i] for i in chosen], padding_side, device)
            batches.append(per_example(batch, token_logprobs(model, batch)))
            if advance is not None:
                advance(len(chosen))
    sums = np.zeros(len(sequences), dtype=np.float64)
    if batches:
        sums[order] = torch.cat(batches).double().cpu().numpy()
    counts = np.array([len(s.answer) for s in sequences], dtype=np.int64)
    return AnswerLogLik(sums, counts)
