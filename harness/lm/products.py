"""Products of loss gradients between anchors and candidates: ``∇L(θ, x)ᵀ P ∇L(θ, z)``.

``grad_ip`` takes ``P = I``; ``ekfac`` takes its damped inverse curvature, applied to the anchors
(N is small) by ``prepare``, so both share these loops.

- :func:`anchor_mean` and :func:`candidate_dots`: ``∇L(z) · v`` per candidate for one vector
  ``v`` per layer (the anchors' mean gradient, or its preconditioned form): one forward and
  backward per candidate batch, the product taken from the layers' inputs and output gradients
  (``Σ_t g_t · (V a_t)``) without forming the candidate's gradient. :func:`sharded_dots` runs
  it over shards of candidates, units of the task's executor, ``v`` formed once on the driver.
- :func:`pair_matrix`: every pair. The anchors' per-example gradients are held for a group of
  layers at a time, as many as fit in ``budget`` bytes with room left for one layer's
  transients; a candidate batch's gradient (``Σ_t g_t a_tᵀ``) is formed one layer at a time,
  inside the backward, and dotted with them at once, and the candidates' forward and backward
  are repeated once per group. ``budget`` so bounds all the gradients the process holds; one
  batch's activations come on top. Chunking over layers was chosen over the per-layer
  identity ``⟨G, G'⟩ = Σ_{t,s} (a_t·a'_s)(g_t·g'_s)``: at ~100 tokens and in + out ≈ 2,000 the
  identity costs more per pair than forming the candidate's gradient once per group. The
  candidates of a group go in shards, units of the task's executor; the anchors' side is formed
  once per group on the driver.

What a unit computes depends only on its shard (the same batches wherever it runs), and the
driver adds the groups' contributions in order, so the scores are the same bytes under either
backend; the shards (a few numbers per candidate) are kept for a resumed run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import numpy as np
import torch
from torch import nn

from dvbench.harness.errors import InputError
from dvbench.harness.lm.grads import dot_gradients, layer_terms, per_example_grads, sum_gradients, tracked_linears
from dvbench.harness.lm.batching import Sizes
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.models import resident
from dvbench.harness.lm.tokens import Encoder, Sequence
from dvbench.harness.progress import Progress
from dvbench.harness.records import ValuationTask
from dvbench.harness.work import Shards, finished, shard_blocks

Gradients = dict[str, torch.Tensor]  # per layer: (n, out, in), or (out, in) for one vector
TRANSIENT = 4  # temporary copies of one layer's gradients (anchors' or a batch's) a product or prepare makes


def gradient_inputs(task: ValuationTask, valuator: str):
    """What a gradient-product valuator scores with: ``(model, tracked linears, anchor sequences,
    candidate sequences)``, both in training form; refuses a task without anchors. The model is
    :func:`~dvbench.harness.lm.models.resident`: a unit of work reads it from there, not from a
    capture."""
    if not task.anchors:
        raise InputError(f"{valuator} needs at least one anchor; give data.anchors (or data.generated.anchors)")
    model, tokenizer = resident(task.model)
    encoder = Encoder(tokenizer, task.template)
    return (model, tracked_linears(model, task.tracked), [encoder.training(x) for x in task.anchors],
            [encoder.training(z) for z in task.candidates])


def dot(anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """One layer's ``(N, out, in)`` and ``(M, out, in)`` gradients dotted pairwise: ``(N, M)``."""
    return torch.einsum("noi,moi->nm", anchors, candidates).double()


def anchor_mean(model: nn.Module, linears: dict[str, nn.Linear], anchors: Seq[Sequence], *, sizes: Sizes,
                progress: Progress, label: str) -> Gradients:
    """``mean_i ∇L(θ, x_i)`` per tracked layer."""
    with progress.task(f"{label} anchors", len(anchors), "sequences") as advance:
        total = sizes.run(lambda counted: sum_gradients(model, anchors, linears, batch_size=sizes["batch_size"],
                                                        advance=counted), advance)
    return {name: g / len(anchors) for name, g in total.items()}


def candidate_dots(model: nn.Module, linears: dict[str, nn.Linear], vectors: Gradients, candidates: Seq[Sequence],
                   *, batch_size: int, advance: Callable[[int], None] | None = None) -> np.ndarray:
    """``∇L(θ, z) · v`` per candidate, ``v`` one tensor per layer: one forward and backward each."""
    device = next(model.parameters()).device
    vectors = {name: v.to(device) for name, v in vectors.items()}
    values = []
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        values.append(dot_gradients(model, collate(chunk, "right", device), linears, vectors).cpu())
        if advance is not None:
            advance(len(chunk))
    return torch.cat(values).numpy()


def sharded_dots(task: ValuationTask, vectors: Gradients, candidates: Seq[Sequence], *, sizes: Sizes,
                 shard_size: int, shards: Shards, name: str, label: str) -> np.ndarray:
    """:func:`candidate_dots` in shards of ``shard_size`` candidates, each a unit of
    ``task.executor`` saved in ``shards`` as ``name``: ``vectors`` go to the units on the CPU,
    captured by their function (sent once per :meth:`~dvbench.harness.executor.Executor.map`)."""
    vectors = {layer: v.cpu() for layer, v in vectors.items()}
    ref, tracked = task.model, task.tracked
    with task.progress.task(f"{label} candidates", len(candidates), "candidates") as advance:
        def unit(block) -> dict[str, np.ndarray]:  # the model from the process's resident copy, not a capture
            model = resident(ref)[0]
            linears = tracked_linears(model, tracked)
            return {"dots": sizes.run(lambda counted: candidate_dots(model, linears, vectors, block, advance=counted,
                                                                     batch_size=sizes["batch_size"]), advance)}

        blocks = shard_blocks(shards, name, candidates, unit, size=shard_size, skipped=advance, executor=task.executor)
    return np.concatenate([b["dots"] for b in blocks])


def pair_matrix(
    task: ValuationTask, model: nn.Module, linears: dict[str, nn.Linear], anchors: Seq[Sequence],
    candidates: Seq[Sequence], *, sizes: Sizes, budget: float, shard_size: int, shards: Shards, name: str,
    label: str, prepare: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = dot,
) -> np.ndarray:
    """The N x M matrix of ``product(prepare(anchor gradients), candidate gradients)`` summed
    over layers, layer group by layer group. ``prepare(name, gradients)`` maps one layer's anchor
    gradients ``(N, out, in)`` (e.g. preconditions them), layer by layer in place of the
    originals; ``product`` maps one layer's anchor and candidate gradients to their (N, M)
    contribution (default: the dot product). A candidate batch's gradients are formed one layer
    at a time, inside its backward, and dotted at once: with the anchors' they stay within
    ``budget`` bytes (:func:`_layer_groups`).

    Per group, the driver (``model``) forms and prepares the anchors' gradients once; the
    candidates then go in shards of ``shard_size``, each a unit of ``task.executor`` given those
    gradients on the CPU (captured, sent once per group) and saved in ``shards`` as
    ``f"{name}-g<group>"`` (a group whose shards are all saved forms no anchor gradient). The
    groups' (N, shard) contributions are added in group order."""
    groups = _layer_groups(linears, len(anchors), sizes["batch_size"], budget)
    matrix = np.zeros((len(anchors), len(candidates)))
    ref, tracked = task.model, task.tracked
    with task.progress.task(f"{label} pairs", len(groups) * (len(anchors) + len(candidates)), "sequences") as advance:
        for index, group in enumerate(groups):
            group_name, held = f"{name}-g{index:03d}", {}
            if finished(shards, group_name, len(candidates), size=shard_size):
                advance(len(anchors))
            else:
                held = sizes.run(lambda counted: per_example_grads(model, anchors, group, advance=counted,
                                                                   batch_size=sizes["batch_size"]), advance)
                for layer in group:  # one layer at a time: the originals go as their replacements come
                    held[layer] = (held[layer] if prepare is None else prepare(layer, held[layer])).cpu()

            def unit(block, held=held, layers=list(group)) -> dict[str, np.ndarray]:
                here = resident(ref)[0]
                chosen = {layer: m for layer, m in tracked_linears(here, tracked).items() if layer in layers}
                return {"pairs": sizes.run(lambda counted: _pairs(here, chosen, held, block, product=product,
                                                                  batch_size=sizes["batch_size"], advance=counted),
                                           advance)}

            blocks = shard_blocks(shards, group_name, candidates, unit, size=shard_size, skipped=advance,
                                  executor=task.executor)
            held.clear()  # before the next group's gradients exist: one group in memory at a time
            matrix += np.concatenate([b["pairs"] for b in blocks], axis=1)
    return matrix


def _pairs(model: nn.Module, linears: dict[str, nn.Linear], held: Gradients, candidates: Seq[Sequence], *,
           batch_size: int, product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           advance: Callable[[int], None]) -> np.ndarray:
    """One group's (N, M) contribution of ``candidates`` against the anchors' ``held`` gradients."""
    device = next(model.parameters()).device
    held = {layer: g.to(device) for layer, g in held.items()}
    matrix = torch.zeros(len(next(iter(held.values()))), len(candidates), dtype=torch.float64)
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        block = matrix[:, start:start + len(chunk)]

        def add(layer, a, g, block=block):
            block.add_(product(held[layer], torch.bmm(g.transpose(1, 2), a)).cpu())

        layer_terms(model, collate(chunk, "right", device), linears, add)
        advance(len(chunk))
    return matrix.numpy()


def _layer_groups(linears: dict[str, nn.Linear], anchors: int, batch_size: int,
                  budget: float) -> list[dict[str, nn.Linear]]:
    """Consecutive layers whose anchors' per-example gradients fit in ``budget`` bytes together,
    less room for one layer's transients: a batch of candidates' gradients and the copies that
    ``prepare`` and ``product`` make, :data:`TRANSIENT` of each (a layer that alone exceeds it
    forms its own group)."""
    def size(module: nn.Linear) -> int:
        return module.weight.numel() * max(module.weight.element_size(), 4)

    room = budget - TRANSIENT * (anchors + batch_size) * max(size(m) for m in linears.values())
    groups, current, used = [], {}, 0
    for name, module in linears.items():
        if current and used + anchors * size(module) > room:
            groups.append(current)
            current, used = {}, 0
        current[name] = module
        used += anchors * size(module)
    return groups + [current] if current else groups
