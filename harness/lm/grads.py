"""Per-example gradients of the tracked linear layers, from one forward and backward per batch.

For a linear layer ``y = W a`` applied at every position ``t`` of a sequence, the gradient of a
loss ``L`` is ``dL/dW = Σ_t g_t a_tᵀ`` with ``g_t = dL/dy_t``. One backward of ``Σ_i L(θ, x_i)``
(:func:`~dvbench.harness.lm.loglik.answer_losses`) over a padded batch gives each example's
``g_t`` (examples do not interact; padding receives zero gradient and is masked anyway).
:func:`layer_terms` hands each tracked layer's inputs ``a`` and output gradients ``g`` to a
callback inside the backward, as soon as that layer's ``g`` exists, and lets both go once it
returns: a batch never holds more than one layer's output gradients, nor more than one block's
inputs and activations (the blocks are checkpointed and recomputed one at a time). :func:`per_example_grads` forms ``Σ_t g_t a_tᵀ`` per example
into one preallocated tensor per layer, :func:`sum_gradients` their sum and
:func:`dot_gradients` their products with given vectors, without forming them.

Only weights are tracked (docs/definitions.md § Valuators: the weights of every linear layer in the transformer blocks);
the model's own parameters get no ``.grad`` and their ``requires_grad`` flags are left as found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence as Seq
from contextlib import contextmanager

import torch
from torch import nn

from dvbench.harness.allocator import large_blocks_mapped
from dvbench.harness.errors import InputError
from dvbench.harness.lm import hf
from dvbench.harness.lm.loglik import Batch, answer_losses, collate
from dvbench.harness.lm.tokens import Sequence

BLOCK = re.compile(r"\.\d+\.")  # a numbered child: a layer of the transformer's block list
Consume = Callable[[str, torch.Tensor, torch.Tensor], None]  # (layer name, a, g)


def tracked_linears(model: nn.Module, pattern: str | None = None) -> dict[str, nn.Linear]:
    """The linear layers whose weights are tracked, by module name.

    Default: every ``nn.Linear`` inside the transformer blocks (attention and MLP; not the output
    head or embeddings). ``pattern``: the linear layers whose name matches this regular
    expression anywhere (``re.search``), e.g. ``mlp`` or ``layers\\.(2[4-9])\\.``.
    """
    head = hf.head(model)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}
    if pattern is None:
        chosen = {name: m for name, m in linears.items() if BLOCK.search(f".{name}.")}
    else:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise InputError(f"tracked-layer pattern {pattern!r} is not a valid regular expression ({error})") from None
        chosen = {name: m for name, m in linears.items() if regex.search(name)}
    if not chosen:
        sample = ", ".join(list(linears)[:6])
        raise InputError(f"no linear layer matches {pattern or 'the default (transformer blocks)'}; "
                         f"linear layers are named like: {sample}")
    return chosen


@contextmanager
def _frozen(model: nn.Module):
    """No weight gradients are needed: only the gradients flowing through layer outputs."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def layer_terms(
    model: nn.Module, batch: Batch, linears: dict[str, nn.Linear], consume: Consume, draws: torch.Tensor | None = None
) -> torch.Tensor:
    """One forward and backward of ``Σ_i L(θ, x_i)`` (mean answer NLL per sequence), calling
    ``consume(name, a, g)`` once per layer of ``linears`` with its inputs ``a`` ``(batch, length,
    in)`` and output gradients ``g`` ``(batch, length, out)``, zero at padding, in the layer's
    dtype promoted to float32. The calls come during the backward, layer by layer (last layer
    first). Returns the per-example losses ``L(θ, x_i)``.

    The blocks run checkpointed (:func:`~dvbench.harness.lm.hf.checkpointed_blocks`): the forward
    keeps each block's input only, and the backward recomputes one block at a time, whose
    layers' inputs are taken then and handed over with their gradients; a backward so holds one
    block's activations and one block's ``a``, whatever the number of blocks.

    With ``draws`` (one uniform per answer token), the loss is that of labels sampled from the
    model's predictive distribution (:func:`~dvbench.harness.lm.loglik.answer_losses`): the
    pseudo-gradients of a Fisher estimate.
    """
    hf.check_model(model)
    padding = (batch.mask == 0)[..., None]
    calls: dict[str, int] = {}
    inputs: dict[str, torch.Tensor] = {}  # taken in the backward's recompute (a leaf's: in the forward)
    grads: dict[str, torch.Tensor] = {}  # a gradient that came before its block's recompute
    done: set[str] = set()
    leaves: list[torch.Tensor] = []

    def meet(name: str) -> None:
        if name in inputs and name in grads:
            a, grad = inputs.pop(name), grads.pop(name)
            done.add(name)
            dtype = torch.promote_types(a.dtype, torch.float32)
            # out of place: the forward's activations may still be needed by the backward
            consume(name, a.masked_fill(padding, 0).to(dtype), grad.masked_fill(padding, 0).to(dtype))

    def hook(name):
        def record(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            first = calls[name] == 1
            if not output.requires_grad:  # the first tracked layers: leaves the backward ends at, and
                output.requires_grad_(True)  # whose block it may never recompute
                if first:
                    leaves.append(output)
                    inputs[name] = args[0].detach()
            if first:  # the forward: the gradient will come to this output
                output.register_hook(lambda grad: (grads.__setitem__(name, grad), meet(name))[0])
            elif name not in done:  # the backward's recompute
                inputs[name] = args[0].detach()
                meet(name)
            return output
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    try:
        with _frozen(model), torch.enable_grad(), hf.checkpointed_blocks(model), large_blocks_mapped():
            losses = answer_losses(model, batch, draws=draws)
            torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    missed = [name for name in linears if name not in done]
    if missed:
        raise InputError(f"tracked layer {missed[0]!r} does not reach the answer loss (or is not inside a "
                         f"transformer block); leave it out of `tracked`")
    return losses.detach()


def per_example_grads(
    model: nn.Module, sequences: Seq[Sequence], linears: dict[str, nn.Linear], *, batch_size: int = 8,
    padding_side: str = "right", advance=None,
) -> dict[str, torch.Tensor]:
    """``∇_W L(θ, x_i)`` of every tracked layer for every sequence: ``{name: (n, out, in)}``, one
    forward and backward per batch of ``batch_size``, each layer's written in place as its
    backward reaches it (no second copy). ``advance(n)`` is called after each batch."""
    device = next(model.parameters()).device
    grads: dict[str, torch.Tensor] = {}
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]

        def write(name, a, g, start=start):
            if name not in grads:
                grads[name] = torch.empty(len(sequences), g.shape[-1], a.shape[-1], dtype=a.dtype, device=device)
            torch.bmm(g.transpose(1, 2), a, out=grads[name][start:start + len(chunk)])

        layer_terms(model, collate(chunk, padding_side, device), linears, write)
        if advance is not None:
            advance(len(chunk))
    return {name: grads[name] for name in linears}  # in the layers' order, not the backward's


def sum_gradients(
    model: nn.Module, sequences: Seq[Sequence], linears: dict[str, nn.Linear], *, batch_size: int = 8,
    advance=None,
) -> dict[str, torch.Tensor]:
    """``Σ_i ∇_W L(θ, x_i)`` of every tracked layer, one forward and backward per batch, with no
    per-example gradient formed."""
    device = next(model.parameters()).device
    total: dict[str, torch.Tensor] = {}

    def add(name, a, g):
        grad = torch.einsum("bto,bti->oi", g, a)
        total[name] = grad if name not in total else total[name].add_(grad)

    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        layer_terms(model, collate(chunk, "right", device), linears, add)
        if advance is not None:
            advance(len(chunk))
    return {name: total[name] for name in linears}


def dot_gradients(
    model: nn.Module, batch: Batch, linears: dict[str, nn.Linear], vectors: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``∇_W L(θ, x_i) · V`` per example of ``batch``, summed over layers, in float64: each
    layer's ``Σ_t g_t · (V a_t)`` taken in the backward, so no per-example gradient is formed."""
    total = torch.zeros(batch.size, dtype=torch.float64, device=batch.ids.device)

    def add(name, a, g):
        total.add_(((a @ vectors[name].to(a.dtype).T) * g).sum((1, 2)).double())

    layer_terms(model, batch, linears, add)
    return total
