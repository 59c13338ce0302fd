"""Per-example gradients of the tracked linear layers, from one forward and backward per batch.

For a linear layer ``y = W a`` applied at every position ``t`` of a sequence, the gradient of a
loss ``L`` is ``dL/dW = Σ_t g_t a_tᵀ`` with ``g_t = dL/dy_t``. One backward of ``Σ_i L(θ, x_i)``
(:func:`~dvbench.harness.lm.loglik.answer_losses`) over a padded batch gives each example's
``g_t`` (examples do not interact; padding receives zero gradient and is masked anyway), so
:func:`layer_terms` returns the inputs ``a`` and output gradients ``g`` of every tracked layer,
and :func:`per_example_grads` forms ``Σ_t g_t a_tᵀ`` per example, batch by batch, into one
preallocated tensor per layer. Gradient valuators may use the terms directly (inner products,
projections) without forming the gradients.

Only weights are tracked (docs/definitions.md § Valuators: the weights of every linear layer in the transformer blocks);
the model's own parameters get no ``.grad`` and their ``requires_grad`` flags are left as found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence as Seq
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from dvbench.harness.errors import InputError
from dvbench.harness.lm import hf
from dvbench.harness.lm.loglik import Batch, answer_losses, collate
from dvbench.harness.lm.tokens import Sequence

BLOCK = re.compile(r"\.\d+\.")  # a numbered child: a layer of the transformer's block list


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


@dataclass(frozen=True)
class LayerTerms:
    """A tracked layer's inputs ``a`` ``(batch, length, in)`` and output gradients ``g``
    ``(batch, length, out)``, zero at padding."""

    inputs: torch.Tensor
    output_grads: torch.Tensor

    def gradients(self) -> torch.Tensor:
        """Per-example weight gradients ``Σ_t g_t a_tᵀ``, ``(batch, out, in)``."""
        return torch.einsum("bto,bti->boi", self.output_grads, self.inputs)


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
    model: nn.Module, batch: Batch, linears: dict[str, nn.Linear], draws: torch.Tensor | None = None
) -> tuple[dict[str, LayerTerms], torch.Tensor]:
    """One forward and backward of ``Σ_i L(θ, x_i)`` (mean answer NLL per sequence).

    Returns the terms of every layer in ``linears`` and the per-example losses ``L(θ, x_i)``.
    With ``draws`` (one uniform per answer token), the loss is that of labels sampled from the
    model's predictive distribution (:func:`~dvbench.harness.lm.loglik.answer_losses`): the
    pseudo-gradients of a Fisher estimate.
    """
    hf.check_model(model)
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args, output):
            inputs[name] = args[0].detach()
            if not output.requires_grad:
                output.requires_grad_(True)
            outputs[name] = output
            return output
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    try:
        with _frozen(model), torch.enable_grad():
            losses = answer_losses(model, batch, draws=draws)
            names = list(outputs)
            grads = torch.autograd.grad(losses.sum(), [outputs[n] for n in names], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    rows, cols = (~batch.mask.bool()).nonzero(as_tuple=True)  # padding: zeroed, as it may hold NaN
    terms = {}
    for name, grad in zip(names, grads):
        dtype = torch.promote_types(inputs[name].dtype, torch.float32)
        a = inputs[name].to(dtype)
        g = (torch.zeros_like(outputs[name]) if grad is None else grad).to(dtype)
        if len(rows):  # in place: the forward's activations are no longer needed
            a[rows, cols] = 0
            g[rows, cols] = 0
        terms[name] = LayerTerms(a, g)
    return terms, losses.detach()


def per_example_grads(
    model: nn.Module, sequences: Seq[Sequence], linears: dict[str, nn.Linear], *, batch_size: int = 8,
    padding_side: str = "right", advance=None,
) -> dict[str, torch.Tensor]:
    """``∇_W L(θ, x_i)`` of every tracked layer for every sequence: ``{name: (n, out, in)}``, one
    forward and backward per batch of ``batch_size``, filled in place (no second copy).
    ``advance(n)`` is called after each batch."""
    device = next(model.parameters()).device
    grads: dict[str, torch.Tensor] = {}
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        terms, _ = layer_terms(model, collate(chunk, padding_side, device), linears)
        for name, t in terms.items():
            if name not in grads:
                out, inp = t.output_grads.shape[-1], t.inputs.shape[-1]
                grads[name] = torch.empty(len(sequences), out, inp, dtype=t.inputs.dtype, device=device)
            grads[name][start:start + len(chunk)] = t.gradients()
        if advance is not None:
            advance(len(chunk))
    return grads


def sum_gradients(
    model: nn.Module, sequences: Seq[Sequence], linears: dict[str, nn.Linear], *, batch_size: int = 8,
    advance=None,
) -> dict[str, torch.Tensor]:
    """``Σ_i ∇_W L(θ, x_i)`` of every tracked layer, one forward and backward per batch, with no
    per-example gradient formed."""
    device = next(model.parameters()).device
    total: dict[str, torch.Tensor] = {}
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        terms, _ = layer_terms(model, collate(chunk, "right", device), linears)
        for name, t in terms.items():
            grad = torch.einsum("bto,bti->oi", t.output_grads, t.inputs)
            total[name] = grad if name not in total else total[name] + grad
        if advance is not None:
            advance(len(chunk))
    return total


def dot_gradients(
    terms: dict[str, LayerTerms], vectors: dict[str, torch.Tensor], stacked: dict | None = None
) -> torch.Tensor:
    """``∇_W L(θ, x_i) · V`` per example of a batch, summed over layers, from the layer terms:
    ``Σ_t g_t · (V a_t)``, so no per-example gradient is formed. Layers fed the same input (an
    attention block's q, k and v) share one product with their stacked ``V``s; pass the same
    ``stacked`` dict on every call to stack them once."""
    stacked = {} if stacked is None else stacked
    groups: dict[int, list[str]] = {}
    for name, t in terms.items():
        groups.setdefault(t.inputs.data_ptr(), []).append(name)
    total = 0
    for names in groups.values():
        a = terms[names[0]].inputs
        key = tuple(names)
        if key not in stacked:
            stacked[key] = torch.cat([vectors[n] for n in names]).to(a.dtype).T
        products = torch.split(a @ stacked[key], [vectors[n].shape[0] for n in names], dim=-1)
        for name, product in zip(names, products):
            total = total + (terms[name].output_grads * product).sum((1, 2))
    return total
