"""``grad_store``: products of projected loss gradients, from a store reused by any anchor set
(LoGra, TRAK, LESS, TrackStar; docs/definitions.md § Valuators).

Per pair ``φ(x)ᵀ P φ(z)``, ``φ`` the seeded random projection of the loss gradient over the
tracked linear weights (:mod:`dvbench.harness.lm.projection`: per layer ``P_g ∇_W L P_aᵀ``, formed
from the layer terms without the full gradient), ``L`` the mean answer NLL of the zero-shot
sequence, ``P`` the identity or the damped inverse Gauss–Newton matrix of the candidates'
projected gradients (``preconditioner``); ``normalize`` makes every ``φ`` unit-norm (cosines).
Same sign as ``grad_ip``, to which it is equal at full ``dims`` with ``orthogonal`` projections.

The candidates' rows are the store (:mod:`dvbench.harness.lm.store`): built once, one forward
and backward per candidate, in shards of :data:`SHARD` candidates handed to ``task.executor``,
saved in ``task.work`` and read back memory-mapped. The work folder is keyed without the anchors
(``anchored_work = False``) and without the scoring options (``derived``), so a later run on
other anchors, or an entry with another aggregate, ``normalize`` or preconditioner, reuses it:
scoring then costs the anchors' forward and backward and one product with the store. The
shards' names carry a digest of everything their rows depend on (candidates, model, template,
tracked layers, projection), so rows made otherwise are never read. The per-anchor matrix is
always given.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Literal

from pydantic import Field

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.artifacts import canonical, fingerprint
from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import BatchSize, Sizes, ran_at
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator
from dvbench.harness.work import shard_blocks

SHARD = 64  # candidates per saved shard of the store


class GradStoreValuator(Valuator):
    """Projected-gradient products against a reusable store of the candidates' projected gradients."""

    name = "grad_store"
    version = "1.0.0"
    derived = ("aggregate", "normalize", "preconditioner", "damping_factor")
    anchored_work = False

    class Config(Config):
        dims: int = Field(16, ge=1, description="Projection size per side of each tracked layer: a layer's "
                                                "`out × in` gradient is stored as `min(dims, out) × min(dims, in)` "
                                                "values.")
        projection: Literal["gaussian", "orthogonal"] = Field(
            "gaussian", description="`gaussian`: entries `N(0, 1/k)`. `orthogonal`: `k` orthonormal rows scaled by "
                                    "`√(n/k)`; at full `dims` the products are `grad_ip`'s exactly.")
        seed: int = Field(0, description="Seed of the projections (each layer's drawn from it and the layer's name).")
        normalize: bool = Field(False, description="Unit-norm projected gradients (anchors' and candidates'): "
                                                   "scores are cosine similarities, as LESS and TrackStar.")
        preconditioner: Literal["none", "gauss_newton"] = Field(
            "none", description="`gauss_newton`: the anchors' rows multiplied by `(F + λI)⁻¹`, `F` the candidates' "
                                "mean outer product of projected gradients per layer (TRAK's, block-diagonal over "
                                "layers), `λ = damping_factor × mean eigenvalue of F`.")
        damping_factor: float = Field(0.1, gt=0, description="`λ` of `gauss_newton`, relative to the mean eigenvalue "
                                                             "of each layer's `F`.")
        aggregate: Literal["mean", "max", "fraction_positive"] = Field(
            "mean", description="Over the anchors: `mean`; `max` (LESS); `fraction_positive`, the fraction of "
                                "anchors with a positive product.")
        batch_size: BatchSize = Field(8, description="Sequences per forward and backward. `auto`: a shard's at "
                                                      "first on a GPU, halved while out of memory (the CPU: 8).")

    def score(self, task: ValuationTask) -> Scores:
        from dvbench.harness.lm import products, projection, store  # torch: imported when scoring
        from dvbench.harness.lm.grads import tracked_linears
        from dvbench.harness.lm.models import resident

        model, linears, anchors, candidates = products.gradient_inputs(task, "grad_store")
        matrices = projection.projections(linears, self.config.dims, self.config.seed, self.config.projection)
        spans = store.offsets(projection.layer_dims(linears, self.config.dims))
        sizes = Sizes.of(self.config, {"batch_size": SHARD}, device=task.model.device, what="valuators.grad_store",
                         log=task.log)
        with task.progress.task("grad_store candidates", len(candidates), "candidates") as advance:
            ref, tracked = task.model, task.tracked  # what a unit needs, not the whole task

            def build(block):  # a unit of work: the model from this process's resident copy, not a capture
                here = resident(ref)[0]
                layers = tracked_linears(here, tracked)
                rows = sizes.run(lambda counted: projection.project(here, block, layers, matrices, advance=counted,
                                                                    batch_size=sizes["batch_size"]), advance)
                return {"rows": rows.numpy()}

            shards = shard_blocks(store.GradientStore(task.work, task.log), f"store-{self._digest(task, linears)}",
                                  candidates, build, size=SHARD, skipped=advance, executor=task.executor)
        with task.progress.task("grad_store anchors", len(anchors), "sequences") as advance:
            rows = sizes.run(lambda counted: projection.project(model, anchors, linears, matrices, advance=counted,
                                                                batch_size=sizes["batch_size"]), advance).numpy()
        damping = self.config.damping_factor if self.config.preconditioner == "gauss_newton" else None
        matrix = store.pair_products(rows, [s["rows"] for s in shards], spans, normalize=self.config.normalize,
                                     damping_factor=damping)
        width = rows.shape[1]
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix,
                           stats={"dims": width, "bytes_per_candidate": width * rows.itemsize, **ran_at([sizes.record()])})

    def _digest(self, task: ValuationTask, linears) -> str:
        """What a store row depends on: the candidates, model, template, tracked layers, projection."""
        key = {"candidates": fingerprint(task.candidates), "model": asdict(task.model),
               "template": asdict(task.template), "batch_size": self.config.batch_size,
               "layers": {name: [m.out_features, m.in_features] for name, m in linears.items()},
               "projection": [self.config.projection, self.config.dims, self.config.seed]}
        return hashlib.sha256(canonical(key).encode()).hexdigest()[:16]


@hookimpl
def dvbench_register_valuators(register):
    register(GradStoreValuator)
