"""Seeded random projections of per-example gradients, formed from the layer terms (LoGra).

For a tracked linear layer ``y = W a``, the per-example gradient is ``G = Σ_t g_t a_tᵀ``
(``out × in``; :mod:`dvbench.harness.lm.grads`). With ``P_g`` (``k_out × out``) and ``P_a``
(``k_in × in``) the projected gradient is

    P_g G P_aᵀ = Σ_t (P_g g_t)(P_a a_t)ᵀ        (k_out × k_in)

taken inside the backward from the layer's inputs and output gradients, as LoGra (Choe et al.
2024) does: ``G`` itself is never formed, and a token costs ``out·k_out + in·k_in`` multiplies
plus the ``k_out·k_in`` outer product instead of ``out·in``. Each side's ``k`` is ``dims``,
capped at that side's size. The flattened projections of the layers, in the layers' order,
are one row per example (:func:`project`).

Products are kept: ``⟨P_g G P_aᵀ, P_g H P_aᵀ⟩ = ⟨G, H⟩`` whenever ``P_gᵀP_g = I`` and
``P_aᵀP_a = I`` (``orthogonal`` at full ``k``), and in expectation otherwise, since
``E[PᵀP] = I`` for both kinds: ``gaussian``, entries ``N(0, 1/k)``; ``orthogonal``, ``k``
orthonormal rows scaled by ``√(n/k)``. The error of a product then shrinks like ``1/√k``.

Each layer's matrices are drawn in float64 on the CPU from a generator seeded by ``seed``, the
layer's name and the side, so they are the same on every device, in every process, for any
subset or order of tracked layers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence as Seq

import torch
from torch import nn

from dvbench.harness.lm.grads import layer_terms
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.tokens import Sequence

Projections = dict[str, tuple[torch.Tensor, torch.Tensor]]  # per layer: (P_g, P_a)


def projections(linears: dict[str, nn.Linear], dims: int, seed: int, kind: str) -> Projections:
    """``(P_g, P_a)`` per tracked layer, float64 on the CPU (see the module's docstring)."""
    return {name: (_matrix(module.out_features, dims, seed, f"{name}:g", kind),
                   _matrix(module.in_features, dims, seed, f"{name}:a", kind))
            for name, module in linears.items()}


def layer_dims(linears: dict[str, nn.Linear], dims: int) -> dict[str, int]:
    """Each layer's share of a projected row: ``k_out · k_in``."""
    return {name: min(dims, m.out_features) * min(dims, m.in_features) for name, m in linears.items()}


def _matrix(n: int, dims: int, seed: int, label: str, kind: str) -> torch.Tensor:
    k = min(dims, n)
    generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8],
                                                             "little") >> 1)
    gaussian = torch.randn(n, k, generator=generator, dtype=torch.float64)
    if kind == "gaussian":
        return gaussian.T / k ** 0.5
    q, _ = torch.linalg.qr(gaussian)  # (n, k), orthonormal columns
    return q.T * (n / k) ** 0.5


def project(model: nn.Module, sequences: Seq[Sequence], linears: dict[str, nn.Linear], matrices: Projections, *,
            batch_size: int = 8, advance=None) -> torch.Tensor:
    """The projected gradients ``P_g ∇_W L(θ, x_i) P_aᵀ`` of every tracked layer, flattened and
    concatenated in the layers' order: ``(n, Σ k_out·k_in)`` on the CPU, in the layers' dtype
    promoted to float32. One forward and backward per batch; ``advance(n)`` after each."""
    parameter = next(model.parameters())
    dtype = torch.promote_types(parameter.dtype, torch.float32)
    moved = {name: (pg.to(parameter.device, dtype), pa.to(parameter.device, dtype))
             for name, (pg, pa) in matrices.items()}
    rows = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        parts: dict[str, torch.Tensor] = {}

        def add(name, a, g):
            pg, pa = moved[name]
            parts[name] = torch.einsum("bto,bti->boi", g @ pg.T, a @ pa.T).flatten(1)

        layer_terms(model, collate(chunk, "right", parameter.device), linears, add)
        rows.append(torch.cat([parts[name] for name in linears], 1).cpu())
        if advance is not None:
            advance(len(chunk))
    return torch.cat(rows)
