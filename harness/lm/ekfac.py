"""EK-FAC: an eigenvalue-corrected Kronecker-factored Gauss–Newton curvature of the tracked
linear layers, and its damped inverse (George et al. 2018; Grosse et al. 2023; docs/definitions.md § EK-FAC).

For a tracked layer with weight ``W`` (out x in), inputs ``a`` and output gradients ``g`` at
every token:

1. :func:`covariances`: ``A = Σ a aᵀ / tokens`` and ``S = Σ g gᵀ / tokens`` over the non-padding
   tokens of the fitting sequences (the candidates). ``g`` are pseudo-gradients: the gradients
   of ``Σ_i L_i`` for labels sampled from the model's own predictive distribution at every
   answer position (or of the true labels), ``L_i`` the sequence's mean answer loss, as
   everywhere in dvbench. Accumulated in the layer's dtype promoted to float32.
2. :func:`eigenbases`: ``A = Q_A diag Q_Aᵀ``, ``S = Q_S diag Q_Sᵀ`` in float64.
3. :func:`corrected_eigenvalues`: ``Λ = mean_i (Q_Sᵀ G_i Q_A)²`` over per-example
   (pseudo-)gradients ``G_i = Σ_t g_t a_tᵀ`` with the same labels, accumulated in the layer's
   dtype promoted to float32 (as the covariances; float64 would double the largest factor). The
   terms are rotated before the gradient is formed, ``Q_Sᵀ G Q_A = Σ_t (Q_Sᵀ g_t)(Q_Aᵀ a_t)ᵀ``:
   ``T (in² + out²)`` multiply-adds a token instead of ``in·out·(in + out)`` per example for
   rotating the formed gradient, chosen per batch by whichever is cheaper.
4. :meth:`Factors.inverse`: ``(Ĝ + λI)⁻¹ V = Q_S ((Q_Sᵀ V Q_A) / (Λ + λ)) Q_Aᵀ`` with
   ``λ = damping_factor × mean(Λ)`` per layer, or one given ``λ`` for every layer; in the
   vectors' dtype or float32, whichever is wider.

Both fitting passes run in shards of candidates, each a unit of work (a Ray worker may run it)
that returns its partial sums on the CPU (:func:`covariance_sums`, :func:`eigenvalue_sums`;
within a shard, batches of similar lengths); the driver adds them in shard order
(:func:`~dvbench.harness.work.running_sum`, which keeps the sum so far as one verified work file,
so an interrupted pass resumes after its last summed shard) and divides once, so the factors
are the same bytes under either backend. The eigendecomposition runs once, on the driver.

The scale of ``A`` and ``S`` does not matter (only their eigenvectors are used); ``Λ`` carries
the scale. Only weights are tracked (:mod:`~dvbench.harness.lm.grads`), so no bias needs the
homogeneous-coordinate trick. Labels are sampled by inverse CDF from one uniform draw per answer
token, drawn from a generator seeded by ``(seed, example index)`` (the index in the whole pool): the
labels do not depend on the batching nor the sharding, and both fitting passes use the same
labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dvbench.harness.executor import Executor
from dvbench.harness.lm.batching import Sizes
from dvbench.harness.lm.grads import layer_terms, tracked_linears
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.models import resident
from dvbench.harness.lm.tokens import Sequence
from dvbench.harness.records import ModelRef
from dvbench.harness.work import WorkFiles, running_sum

Advance = Callable[[int], None]
KINDS = ("activations", "gradients")  # A's and S's keys beside a layer's name
TOKENS = "tokens"
COVARIANCE_SUMS, EIGENVALUE_SUMS = "covariance-sums.safetensors", "eigenvalue-sums.safetensors"  # running sums


def draws(sequences: Seq[Sequence], seed: int) -> list[torch.Tensor]:
    """One uniform number per answer token of each sequence, from a generator seeded by
    ``(seed, index)``: the sampled labels of :func:`~dvbench.harness.lm.loglik.token_logprobs`."""
    out = []
    for index, s in enumerate(sequences):
        state = int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])
        out.append(torch.rand(len(s.answer), generator=torch.Generator().manual_seed(state), dtype=torch.float64))
    return out


def _batches(sequences: Seq[Sequence], labels: Seq[torch.Tensor] | None, batch_size: int, device):
    """Right-padded batches of similar lengths (longest first), with their labels' draws."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        batch = collate([sequences[i] for i in chosen], "right", device)
        yield batch, None if labels is None else torch.cat([labels[i] for i in chosen])


def covariances(
    ref: ModelRef, tracked: str | None, sequences: Seq[Sequence], *, labels: list[torch.Tensor] | None,
    sizes: Sizes, shard_size: int, files: WorkFiles, executor: Executor | None = None, advance: Advance,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(A, S)`` per tracked layer: the input and output-gradient covariances per token, on the
    model's device. Each shard of ``shard_size`` sequences is a unit of ``executor``
    (:func:`covariance_sums`); the driver adds the shards' sums in shard order, its running sum
    kept in ``files`` (:func:`~dvbench.harness.work.running_sum`, file :data:`COVARIANCE_SUMS`)."""
    def unit(block):  # the model from the process's resident copy, not a capture
        model = resident(ref)[0]
        linears = tracked_linears(model, tracked)
        return sizes.run(lambda counted: covariance_sums(model, *_unzipped(block), linears, advance=counted,
                                                         batch_size=sizes["batch_size"]), advance)

    sums = running_sum(files, COVARIANCE_SUMS, _items(sequences, labels), unit, size=shard_size, skipped=advance,
                       executor=executor)
    model, tokens = resident(ref)[0], sums.pop(TOKENS).item()
    device = next(model.parameters()).device
    return {name: tuple(sums.pop(f"{name}.{kind}").to(device) / tokens for kind in KINDS)
            for name in tracked_linears(model, tracked)}


def covariance_sums(
    model: nn.Module, sequences: Seq[Sequence], labels: Seq[torch.Tensor] | None, linears: dict[str, nn.Linear], *,
    batch_size: int, advance: Advance,
) -> dict[str, torch.Tensor]:
    """One shard's ``Σ a aᵀ`` and ``Σ g gᵀ`` per layer (``"<layer>.activations"``,
    ``"<layer>.gradients"``) and its non-padding token count (:data:`TOKENS`), on the CPU."""
    device = next(model.parameters()).device
    sums: dict[str, list[torch.Tensor]] = {}
    tokens = 0

    def add(name, a, g):
        a, g = a.flatten(0, 1), g.flatten(0, 1)
        if name not in sums:
            sums[name] = [a.T @ a, g.T @ g]
        else:
            sums[name][0].addmm_(a.T, a)
            sums[name][1].addmm_(g.T, g)

    for batch, batch_draws in _batches(sequences, labels, batch_size, device):
        layer_terms(model, batch, linears, add, batch_draws)
        tokens += int(batch.mask.sum())
        advance(batch.size)
    out = {f"{name}.{kind}": sum_.cpu() for name in linears for kind, sum_ in zip(KINDS, sums.pop(name))}
    return {**out, TOKENS: torch.tensor(tokens, dtype=torch.int64)}


def eigenbases(
    covs: dict[str, tuple[torch.Tensor, torch.Tensor]], advance: Advance
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(Q_A, Q_S)`` per layer: eigenvectors computed in float64, returned in the covariances'
    dtype. Empties ``covs`` as it goes: a layer's covariances are let go once its bases exist."""
    bases = {}
    for name in list(covs):
        pair = covs.pop(name)
        vectors = []
        for cov in pair:
            c = cov.double()
            # contiguous, as when read back from disk: the same memory layout, the same rounding
            vectors.append(torch.linalg.eigh((c + c.T) / 2).eigenvectors.to(cov.dtype).contiguous())
        bases[name] = (vectors[0], vectors[1])
        advance(1)
    return bases


def corrected_eigenvalues(
    ref: ModelRef, tracked: str | None, sequences: Seq[Sequence], bases: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *, labels: list[torch.Tensor] | None, sizes: Sizes, shard_size: int, files: WorkFiles,
    executor: Executor | None = None, advance: Advance,
) -> dict[str, torch.Tensor]:
    """``Λ = mean_i (Q_Sᵀ G_i Q_A)²`` per layer, ``(out, in)``, in the layer's dtype promoted to
    float32, on the CPU: shards as for :func:`covariances` (:func:`eigenvalue_sums`, the running
    sum in file :data:`EIGENVALUE_SUMS`), the bases shipped to the units on the CPU."""
    bases = {name: (q_a.cpu(), q_s.cpu()) for name, (q_a, q_s) in bases.items()}  # captured: sent once per pass

    def unit(block):
        model = resident(ref)[0]
        linears = tracked_linears(model, tracked)
        return sizes.run(lambda counted: eigenvalue_sums(model, *_unzipped(block), linears, bases, advance=counted,
                                                         batch_size=sizes["batch_size"]), advance)

    sums = running_sum(files, EIGENVALUE_SUMS, _items(sequences, labels), unit, size=shard_size, skipped=advance,
                       executor=executor)
    return {name: total / len(sequences) for name, total in sums.items()}


def eigenvalue_sums(
    model: nn.Module, sequences: Seq[Sequence], labels: Seq[torch.Tensor] | None, linears: dict[str, nn.Linear],
    bases: dict[str, tuple[torch.Tensor, torch.Tensor]], *, batch_size: int, advance: Advance,
) -> dict[str, torch.Tensor]:
    """One shard's ``Σ_i (Q_Sᵀ G_i Q_A)²`` per layer, on the CPU."""
    device = next(model.parameters()).device
    bases = {name: (q_a.to(device), q_s.to(device)) for name, (q_a, q_s) in bases.items()}
    sums: dict[str, torch.Tensor] = {}

    def add(name, a, g):
        q_a, q_s = bases[name]
        rotated = _rotated_gradients(a, g, q_a, q_s).square_().sum(0)
        sums[name] = rotated if name not in sums else sums[name].add_(rotated)

    for batch, batch_draws in _batches(sequences, labels, batch_size, device):
        layer_terms(model, batch, linears, add, batch_draws)
        advance(batch.size)
    return {name: sums.pop(name).cpu() for name in linears}


def _items(sequences: Seq[Sequence], labels: list[torch.Tensor] | None) -> list[tuple]:
    """Each sequence with its label draws (``None`` for the true labels): a shard carries its
    own, so the labels are each candidate's whatever the sharding."""
    return list(zip(sequences, labels if labels is not None else [None] * len(sequences)))


def _unzipped(block: Seq[tuple]) -> tuple[list[Sequence], list[torch.Tensor] | None]:
    sequences, labels = (list(column) for column in zip(*block))
    return sequences, None if labels[0] is None else labels


def _rotated_gradients(a: torch.Tensor, g: torch.Tensor, q_a: torch.Tensor, q_s: torch.Tensor) -> torch.Tensor:
    """``Q_Sᵀ G_i Q_A`` per example, ``G_i = Σ_t g_t a_tᵀ``: terms rotated first when that costs
    less than rotating the formed gradients."""
    length, inp, out = a.shape[1], a.shape[-1], g.shape[-1]
    if length * (inp * inp + out * out) <= inp * out * (inp + out):
        return torch.einsum("bto,bti->boi", g @ q_s, a @ q_a)
    return q_s.T @ torch.einsum("bto,bti->boi", g, a) @ q_a


@dataclass(frozen=True)
class Factors:
    """Fitted EK-FAC factors per tracked layer: eigenbases ``Q_A`` (in x in), ``Q_S`` (out x out)
    and corrected eigenvalues ``Λ`` (out x in)."""

    bases: dict[str, tuple[torch.Tensor, torch.Tensor]]
    eigenvalues: dict[str, torch.Tensor]

    def damping(self, name: str, *, factor: float, value: float | None = None) -> float:
        """``λ`` of layer ``name``: ``value`` if given, else ``factor × mean(Λ)``."""
        return float(value) if value is not None else factor * float(self.eigenvalues[name].mean())

    def inverse(self, name: str, vectors: torch.Tensor, damping: float) -> torch.Tensor:
        """``(Ĝ + λI)⁻¹ V`` for ``V`` of shape ``(..., out, in)``, computed in ``V``'s dtype or
        float32, whichever is wider (the eigenbases are kept in the model's precision, so float64
        arithmetic on a float32 model's bases would only cost time), and returned in ``V``'s dtype."""
        wide = torch.promote_types(vectors.dtype, torch.float32)
        q_a, q_s = (q.to(vectors.device, wide) for q in self.bases[name])
        lam = self.eigenvalues[name].to(vectors.device, wide)
        rotated = q_s.T @ vectors.to(wide) @ q_a
        return (q_s @ (rotated / (lam + damping)) @ q_a.T).to(vectors.dtype)
