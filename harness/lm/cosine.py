"""Cosine similarity of loss gradients over the tracked layers (``grad_ip normalize: true``).

``cos(x, z) = ∇L(x)·∇L(z) / (|∇L(x)| |∇L(z)|)``, norms over all tracked weights. The norms come
from each layer's batch gradients ``Σ_t g_t a_tᵀ``, formed inside the backward one layer at a
time and let go (:func:`norms_and_dots`). The mean over anchors needs no pair:
``mean_i cos(x_i, z) = (u · ∇L(z)) / |∇L(z)|`` with ``u = mean_i ∇L(x_i) / |∇L(x_i)|``
(:func:`unit_mean`), taken in the same pass as the candidate's norm. A zero gradient has
cosine 0 with everything.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import torch
from torch import nn

from dvbench.harness.lm.grads import layer_terms
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.tokens import Sequence
from dvbench.harness.progress import Progress

Gradients = dict[str, torch.Tensor]


def norms_and_dots(model: nn.Module, linears: dict[str, nn.Linear], sequences: Seq[Sequence], *, batch_size: int,
                   progress: Progress, label: str, vectors: Gradients | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence, ``|∇L|`` over the tracked layers and (with ``vectors``, one tensor per layer)
    ``∇L · v``, both float64: one forward and backward per batch."""
    device = next(model.parameters()).device
    norms, dots = [], []
    with progress.task(label, len(sequences), "sequences") as advance:
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            squares = torch.zeros(len(chunk), dtype=torch.float64, device=device)
            products = torch.zeros(len(chunk), dtype=torch.float64, device=device)

            def add(name, a, g):
                grad = torch.bmm(g.transpose(1, 2), a)  # (batch, out, in): this layer only
                squares.add_(grad.square().sum((1, 2)).double())
                if vectors is not None:
                    products.add_((grad * vectors[name].to(grad.dtype)).sum((1, 2)).double())

            layer_terms(model, collate(chunk, "right", device), linears, add)
            norms.append(squares.sqrt().cpu())
            dots.append(products.cpu())
            advance(len(chunk))
    return torch.cat(norms).numpy(), torch.cat(dots).numpy()


def unit_mean(model: nn.Module, linears: dict[str, nn.Linear], sequences: Seq[Sequence], norms: np.ndarray, *,
              batch_size: int, progress: Progress, label: str) -> Gradients:
    """``mean_i ∇L(x_i) / |∇L(x_i)|`` per tracked layer (a zero gradient adds nothing): one
    forward and backward per batch, each sequence's output gradients scaled by its weight."""
    device = next(model.parameters()).device
    weights = torch.from_numpy(np.divide(1.0, norms * len(norms), out=np.zeros_like(norms), where=norms > 0))
    total: Gradients = {}
    with progress.task(label, len(sequences), "sequences") as advance:
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            w = weights[start:start + len(chunk)].to(device)

            def add(name, a, g, w=w):
                grad = torch.einsum("bto,bti->oi", g * w.to(g.dtype)[:, None, None], a)
                total[name] = grad if name not in total else total[name].add_(grad)

            layer_terms(model, collate(chunk, "right", device), linears, add)
            advance(len(chunk))
    return {name: total[name] for name in linears}


def cosines(products: np.ndarray, anchor_norms: np.ndarray | None, candidate_norms: np.ndarray) -> np.ndarray:
    """Products divided by the norms: ``(N, M)`` pairs by both, or (``anchor_norms=None``) one
    value per candidate already divided on the anchors' side; 0 where a norm is 0."""
    denominator = candidate_norms if anchor_norms is None else np.outer(anchor_norms, candidate_norms)
    return np.divide(products, denominator, out=np.zeros_like(products, dtype=np.float64), where=denominator > 0)
