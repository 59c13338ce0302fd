"""``grad_ip``: gradient inner product, Infl_IP (this paper's eq. 5; SPEC.md).

Per pair, ``∇L(θ, x) · ∇L(θ, z)`` over the tracked linear weights (``tracked`` in the spec),
``L`` the mean answer NLL of the zero-shot sequence. Positive when a gradient step on ``z``
lowers the loss on ``x`` (lemma 1).

- ``aggregate: mean`` (default) is ``∇L(z) · mean_i ∇L(x_i)``: the anchors' mean gradient is
  formed once, then each candidate costs one forward and backward, its product taken from the
  layers' inputs and output gradients (``Σ_t g_t · (V a_t)``) without forming its gradient.
- ``aggregate: fraction_positive`` and the per-anchor N x M matrix need every pair. The anchors'
  per-example gradients are held for a group of layers at a time, as many as fit in
  ``max_gradient_gb``; each candidate's gradient for those layers (``Σ_t g_t a_tᵀ``) is formed
  and dotted with them, and the candidates' forward and backward are repeated once per group.
  Chunking over layers was chosen over the per-layer identity
  ``⟨G, G'⟩ = Σ_{t,s} (a_t·a'_s)(g_t·g'_s)``: at ~100 tokens and in + out ≈ 2,000 the identity
  costs more per pair than forming the candidate's gradient once per group.
- ``transform: sign_log`` is the paper's released computation: each gradient element's
  magnitude clamped to [1e-4, 1], one dot product per weight tensor, ``s → sign(s)·log|s|``
  (NaN and ±inf → 0), summed over tensors. It needs every pair. Where a tensor's product cancels
  to rounding noise, its sign (and so a ±|log| term) is the summation order's: the transform
  is ill-conditioned there, in the release as here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.models import load_model
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator

if TYPE_CHECKING:
    import torch


class GradIpValuator(Valuator):
    """Infl_IP: the inner product of the candidate's and the anchors' loss gradients."""

    name = "grad_ip"
    version = "1.0.0"

    class Config(Config):
        aggregate: Literal["mean", "fraction_positive"] = Field(
            "mean", description="mean: ∇L(z)·mean ∇L(x); fraction_positive: fraction of anchors with a positive product.")
        transform: Literal["none", "sign_log"] = Field(
            "none", description="sign_log: the paper's released clamp / per-tensor sign·log computation.")
        batch_size: int = Field(8, ge=1, description="Sequences per forward and backward.")
        max_gradient_gb: float = Field(4.0, gt=0, description="Memory for the anchors' per-example gradients "
                                                              "when every pair is needed; layers are grouped to fit.")

    def score(self, task: ValuationTask) -> Scores:
        from dvbench.harness.lm.grads import tracked_linears  # torch: imported when scoring, not at registration

        if not task.anchors:
            raise ValueError("grad_ip needs at least one anchor; give data.anchors")
        model, tokenizer = load_model(task.model)
        encoder = Encoder(tokenizer, task.template)
        linears = tracked_linears(model, task.tracked)
        anchors = [encoder.training(x) for x in task.anchors]
        candidates = [encoder.training(z) for z in task.candidates]
        if self.config.aggregate == "mean" and self.config.transform == "none":
            return self.scores(task, self._mean(model, linears, anchors, candidates, task.progress))
        matrix = self._pairs(model, linears, anchors, candidates, task.progress)
        values = matrix.mean(axis=0) if self.config.aggregate == "mean" else (matrix > 0).mean(axis=0)
        return self.scores(task, values, matrix)

    def _mean(self, model, linears, anchors, candidates, progress) -> np.ndarray:
        return self.candidate_dots(model, linears, self.anchor_mean(model, linears, anchors, progress),
                                   candidates, progress)

    def anchor_mean(self, model, linears, anchors, progress) -> dict[str, torch.Tensor]:
        """``mean_i ∇L(θ, x_i)`` per tracked layer."""
        from dvbench.harness.lm.grads import sum_gradients

        with progress.task("grad_ip anchors", len(anchors), "sequences") as advance:
            total = sum_gradients(model, anchors, linears, batch_size=self.config.batch_size, advance=advance)
        return {name: g / len(anchors) for name, g in total.items()}

    def candidate_dots(self, model, linears, mean, candidates, progress) -> np.ndarray:
        """``∇L(θ, z) · mean`` per candidate: one forward and backward each."""
        import torch

        from dvbench.harness.lm.grads import dot_gradients, layer_terms
        from dvbench.harness.lm.loglik import collate

        device = next(model.parameters()).device
        values, stacked = [], {}
        with progress.task("grad_ip candidates", len(candidates), "candidates") as advance:
            for start in range(0, len(candidates), self.config.batch_size):
                chunk = candidates[start:start + self.config.batch_size]
                terms, _ = layer_terms(model, collate(chunk, "right", device), linears)
                values.append(dot_gradients(terms, mean, stacked).double().cpu())
                advance(len(chunk))
        return torch.cat(values).numpy()

    def _pairs(self, model, linears, anchors, candidates, progress) -> np.ndarray:
        """The N x M matrix, layer group by layer group."""
        import torch

        device = next(model.parameters()).device
        groups = _layer_groups(linears, len(anchors), self.config.max_gradient_gb * 2**30)
        matrix = torch.zeros(len(anchors), len(candidates), dtype=torch.float64)
        with progress.task("grad_ip pairs", len(groups) * (len(anchors) + len(candidates)), "sequences") as advance:
            for group in groups:
                held = self._gradients(model, anchors, group, device, advance)
                for start in range(0, len(candidates), self.config.batch_size):
                    chunk = candidates[start:start + self.config.batch_size]
                    grads = self._gradients(model, chunk, group, device, advance)
                    for name in group:
                        matrix[:, start:start + len(chunk)] += self._products(held[name], grads[name]).cpu()
                del held  # before the next group's gradients exist: one group in memory at a time
        return matrix.numpy()

    def _gradients(self, model, sequences, group, device, advance) -> dict[str, torch.Tensor]:
        """Per-example gradients of the layers in ``group``: ``{name: (n, out, in)}``, filled in
        place (no second copy)."""
        import torch

        from dvbench.harness.lm.grads import layer_terms
        from dvbench.harness.lm.loglik import collate

        grads: dict[str, torch.Tensor] = {}
        for start in range(0, len(sequences), self.config.batch_size):
            chunk = sequences[start:start + self.config.batch_size]
            terms, _ = layer_terms(model, collate(chunk, "right", device), group)
            for name, t in terms.items():
                if name not in grads:
                    out, inp = t.output_grads.shape[-1], t.inputs.shape[-1]
                    grads[name] = torch.empty(len(sequences), out, inp, dtype=t.inputs.dtype, device=device)
                grads[name][start:start + len(chunk)] = t.gradients()
            advance(len(chunk))
        return grads

    def _products(self, anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """One weight tensor's contribution to every (anchor, candidate) pair."""
        import torch

        if self.config.transform == "none":
            return torch.einsum("noi,moi->nm", anchors, candidates).double()
        s = torch.einsum("noi,moi->nm", _clamped(anchors), _clamped(candidates)).double()
        return torch.nan_to_num(torch.sign(s) * torch.log(s.abs()), nan=0.0, posinf=0.0, neginf=0.0)


def _clamped(gradient: torch.Tensor) -> torch.Tensor:
    """Each element's magnitude clamped to [1e-4, 1], its sign kept (the paper's release)."""
    import torch

    return torch.sign(gradient) * gradient.abs().clamp(1e-4, 1.0)


def _layer_groups(linears: dict, anchors: int, budget: float) -> list[dict]:
    """Consecutive layers whose anchors' per-example gradients fit in ``budget`` bytes together
    (a layer that alone exceeds it forms its own group)."""
    groups, current, used = [], {}, 0
    for name, module in linears.items():
        size = anchors * module.weight.numel() * max(module.weight.element_size(), 4)
        if current and used + size > budget:
            groups.append(current)
            current, used = {}, 0
        current[name] = module
        used += size
    return groups + [current] if current else groups


@hookimpl
def dvbench_register_valuators(register):
    register(GradIpValuator)
