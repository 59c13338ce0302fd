"""``grad_ip``: gradient inner product, Infl_IP (this paper's eq. 5; docs/definitions.md § Valuators).

Per pair, ``∇L(θ, x) · ∇L(θ, z)`` over the tracked linear weights (``tracked`` in the spec),
``L`` the mean answer NLL of the zero-shot sequence. Positive when a gradient step on ``z``
lowers the loss on ``x`` (lemma 1).

- ``aggregate: mean`` (default) is ``∇L(z) · mean_i ∇L(x_i)``: the anchors' mean gradient is
  formed once, then each candidate costs one forward and backward, its product taken without
  forming its gradient (:mod:`dvbench.harness.lm.products`).
- ``aggregate: fraction_positive``, and ``per_anchor: true`` (the N x M matrix, saved for the
  ground truth's per-anchor LDS and fact attribution, with ``mean`` taken from it), need every
  pair: the anchors' per-example gradients are held for as many layers at a time as fit in
  ``max_gradient_gb``, and the candidates' forward and backward are repeated once per group
  (:func:`~dvbench.harness.lm.products.pair_matrix`).
- ``transform: sign_log`` is the paper's released computation: each gradient element's
  magnitude clamped to [1e-4, 1], one dot product per weight tensor, ``s → sign(s)·log|s|``
  (NaN and ±inf → 0), summed over tensors. It needs every pair. Where a tensor's product cancels
  to rounding noise, its sign (and so a ±|log| term) is the summation order's: the transform
  is ill-conditioned there, in the release as here.
- ``normalize: true``: cosine similarity, each pair's product divided by both gradients' norms
  over the tracked layers (:mod:`dvbench.harness.lm.cosine`). The ``mean`` aggregate costs one
  more forward and backward per candidate than the dot product's (the norm: each layer's batch
  gradient formed in the backward) and two over the anchors; every pair costs the norms' passes
  on top of the products'.

The candidates go in shards of ``shard_size``, units of ``task.executor`` saved in ``task.work``
(the products' loops, :mod:`~dvbench.harness.lm.products`; not ``normalize: true``'s mean path):
an interrupted run resumes from the finished shards, and the scores are the same bytes under
either backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import BatchSize, Sizes, ran_at
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator
from dvbench.harness.work import Shards

if TYPE_CHECKING:
    import torch


class GradIpValuator(Valuator):
    """Infl_IP: the inner product of the candidate's and the anchors' loss gradients."""

    name = "grad_ip"
    version = "1.3.0"

    class Config(Config):
        aggregate: Literal["mean", "fraction_positive"] = Field(
            "mean", description="`mean`: `∇L(z) · mean_i ∇L(x_i)`. `fraction_positive`: the fraction of anchors "
                                "with a positive product.")
        transform: Literal["none", "sign_log"] = Field(
            "none", description="`sign_log`, paper-faithful: the released code's computation (each gradient "
                                "element's magnitude clamped to [1e-4, 1], one dot product per weight tensor "
                                "mapped to `sign(s)·log|s|`, NaN and ±inf to 0, summed). Ill-conditioned where "
                                "a tensor's product cancels to rounding noise.")
        per_anchor: bool = Field(False, description="Also give the anchors × candidates matrix with the `mean` "
                                                    "aggregate (taken from it); costs every pair, as "
                                                    "`fraction_positive` and `sign_log` do.")
        batch_size: BatchSize = Field(8, description="Sequences per forward and backward. `auto`: a shard's at "
                                                      "first on a GPU, halved while out of memory (the CPU: 8).")
        max_gradient_gb: float = Field(4.0, gt=0, description="Memory (GiB) for all the gradients held when "
                                                              "every pair is needed (the anchors' per-example "
                                                              "gradients of a group of layers, one layer's "
                                                              "transients); layers are grouped to fit.")
        normalize: bool = Field(False, description="Cosine similarity: each product divided by both gradients' "
                                                   "norms over the tracked layers (-1..1). Not with `sign_log`.")
        shard_size: int = Field(64, ge=1, description="Candidates per saved shard: what a resumed run keeps and "
                                                      "one unit of work (a Ray worker takes one at a time, so "
                                                      "M / shard_size units keep that many workers busy).")

        @model_validator(mode="after")
        def _normalize_plain_products(self):
            if self.normalize and self.transform == "sign_log":
                raise ValueError("normalize: true takes the plain products; it cannot be combined with transform: "
                                 "sign_log (set one of them)")
            return self

    def score(self, task: ValuationTask) -> Scores:
        from dvbench.harness.lm import products  # torch: imported when scoring, not at registration

        model, linears, anchors, candidates = products.gradient_inputs(task, "grad_ip")
        sizes = Sizes.of(self.config, {"batch_size": self.config.shard_size}, device=task.model.device,
                         what="valuators.grad_ip", log=task.log)
        loop = dict(sizes=sizes, label="grad_ip")
        sharded = dict(shard_size=self.config.shard_size, shards=Shards(task.work, task.log))
        if self.config.normalize:
            return self._cosines(task, model, linears, anchors, candidates, {**loop, **sharded})
        if self.config.aggregate == "mean" and self.config.transform == "none" and not self.config.per_anchor:
            mean = products.anchor_mean(model, linears, anchors, progress=task.progress, **loop)
            dots = products.sharded_dots(task, mean, candidates, name="dots", **loop, **sharded)
            return self.scores(task, dots, stats=ran_at([sizes.record()]))
        sign_log = self.config.transform == "sign_log"
        matrix = products.pair_matrix(task, model, linears, anchors, candidates,
                                      budget=self.config.max_gradient_gb * 2**30, name="pairs",
                                      prepare=(lambda name, g: _clamped(g)) if sign_log else None,
                                      product=_sign_log if sign_log else products.dot, **loop, **sharded)
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix, stats=ran_at([sizes.record()]))

    def _cosines(self, task, model, linears, anchors, candidates, loop) -> Scores:
        from dvbench.harness.lm import cosine, products

        batch = dict(batch_size=loop["sizes"]["batch_size"], progress=task.progress)  # the cosines' own passes
        anchor_norms, _ = cosine.norms_and_dots(model, linears, anchors, label="grad_ip anchor norms", **batch)
        if self.config.aggregate == "mean" and not self.config.per_anchor:
            unit = cosine.unit_mean(model, linears, anchors, anchor_norms, label="grad_ip anchors", **batch)
            norms, dots = cosine.norms_and_dots(model, linears, candidates, label="grad_ip candidates", vectors=unit,
                                                **batch)
            return self.scores(task, cosine.cosines(dots, None, norms))
        matrix = products.pair_matrix(task, model, linears, anchors, candidates,
                                      budget=self.config.max_gradient_gb * 2**30, name="pairs", **loop)
        norms, _ = cosine.norms_and_dots(model, linears, candidates, label="grad_ip candidate norms", **batch)
        matrix = cosine.cosines(matrix, anchor_norms, norms)
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix)


def _sign_log(anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """One weight tensor's contribution to every (anchor, candidate) pair, as the paper's release
    computes it, the anchors' gradients already clamped (:func:`_clamped`)."""
    import torch

    s = torch.einsum("noi,moi->nm", anchors, _clamped(candidates)).double()
    return torch.nan_to_num(torch.sign(s) * torch.log(s.abs()), nan=0.0, posinf=0.0, neginf=0.0)


def _clamped(gradient: torch.Tensor) -> torch.Tensor:
    """Each element's magnitude clamped to [1e-4, 1], its sign kept (the paper's release)."""
    import torch

    return torch.sign(gradient) * gradient.abs().clamp(1e-4, 1.0)


@hookimpl
def dvbench_register_valuators(register):
    register(GradIpValuator)
