"""``ekfac``: influence through an EK-FAC Gauss–Newton curvature (the paper's Infl; docs/definitions.md § EK-FAC).

Per pair ``∇L(θ, x)ᵀ (Ĝ + λI)⁻¹ ∇L(θ, z)`` over the tracked linear weights, ``L`` the mean
answer loss of the zero-shot sequence, ``Ĝ`` fitted on the candidates
(:mod:`dvbench.harness.lm.ekfac`). Same sign as ``grad_ip``: positive when a step on ``z``
lowers the loss on ``x``.

Phases, each with its progress row:

1. covariance: one forward and backward per candidate, with labels sampled from the model
   (``labels: sampled``, seeded by the spec's seed and each candidate's index) or the
   candidates' own (``true``);
2. eigendecomposition: two per layer, in float64, once, on the driver;
3. eigenvalue correction: another forward and backward per candidate, with the same labels;
4. scoring: the anchors' gradients are preconditioned (N is small), never the candidates'. For
   ``aggregate: mean`` the anchors' mean gradient is preconditioned once and each candidate
   costs one more forward and backward; ``fraction_positive`` and ``per_anchor: true`` need every
   pair (:func:`~dvbench.harness.lm.products.pair_matrix`, within ``max_gradient_gb``) and give
   the per-anchor matrix (``mean`` is then taken from it).

Phases 1, 3 and 4 run in shards of ``shard_size`` candidates, units of ``task.executor``: the
fitting passes' shards return partial sums, added on the driver in shard order
(:func:`~dvbench.harness.lm.ekfac.covariances`), the scoring's their products
(:mod:`~dvbench.harness.lm.products`), so the files are the same bytes under either backend.

The factors are kept in ``task.work``: ``eigenbases.safetensors`` once the eigendecomposition is
done and ``eigenvalues.safetensors`` once the correction is, each written atomically and
verified before reuse (:class:`~dvbench.harness.work.WorkFiles`); while a fitting pass runs, its
sum so far (removed once the pass's factors are saved); the scoring's shards, named after the
options they depend on beyond the fit. A rerun with the same model, data, template, tracked
layers, seed and fitting options reuses them; a run interrupted in a fitting pass resumes after
its last summed shard. ``aggregate``, ``per_anchor``, ``damping``, ``damping_factor`` and
``max_gradient_gb`` change only the scoring, so entries differing in them share the factors.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.artifacts import canonical, read_safetensors, write_safetensors
from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import BatchSize, Sizes, ran_at
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator
from dvbench.harness.work import Shards, WorkFiles

if TYPE_CHECKING:
    from dvbench.harness.lm.ekfac import Factors

BASES, EIGENVALUES = "eigenbases.safetensors", "eigenvalues.safetensors"


class EkfacValuator(Valuator):
    """Influence functions with EK-FAC: anchor gradients preconditioned by the inverse curvature."""

    name = "ekfac"
    version = "1.2.0"
    derived = ("aggregate", "per_anchor", "damping", "damping_factor", "max_gradient_gb")

    class Config(Config):
        aggregate: Literal["mean", "fraction_positive"] = Field(
            "mean", description="`mean`: the mean over anchors, `∇L(z) · (Ĝ+λI)⁻¹ mean_i ∇L(x_i)`, one forward "
                                "and backward per candidate. `fraction_positive`: the fraction of anchors with a "
                                "positive score; computes every pair and gives the per-anchor matrix.")
        labels: Literal["sampled", "true"] = Field(
            "sampled", description="`sampled`: the Gauss–Newton (true Fisher) estimate, one label drawn per answer "
                                   "token from the model's predictive distribution, seeded by the spec's `seed`. "
                                   "`true`: the candidates' own answers (the empirical Fisher); YAML's bare `true` "
                                   "means this too.")
        per_anchor: bool = Field(False, description="Also give the anchors × candidates matrix with the `mean` "
                                                    "aggregate (taken from it); costs every pair, as "
                                                    "`fraction_positive` does.")
        damping_factor: float = Field(0.1, gt=0, description="`λ = damping_factor × mean(Λ)`, per layer "
                                                             "(kronfluence's `damping_factor=None` heuristic).")
        damping: float | None = Field(None, ge=0, description="One `λ` for every layer, in place of "
                                                              "`damping_factor`. As it grows, scores tend to "
                                                              "`grad_ip`'s divided by `λ`.")
        batch_size: BatchSize = Field(8, description="Sequences per forward and backward. `auto`: a shard's at "
                                                      "first on a GPU, halved while out of memory (the CPU: 8).")
        max_gradient_gb: float = Field(4.0, gt=0, description="Memory (GiB) for all the gradients held when "
                                                              "every pair is needed (the anchors' per-example "
                                                              "gradients of a group of layers, one layer's "
                                                              "transients); layers are grouped to fit.")
        shard_size: int = Field(64, ge=1, description="Candidates per shard of the fit's passes and of the scoring: "
                                                      "what a resumed run keeps and one unit of work (a Ray worker "
                                                      "takes one at a time, so M / shard_size units keep that many "
                                                      "workers busy). The fit's sums are added shard by shard.")

        @field_validator("labels", mode="before")
        @classmethod
        def _bare_true(cls, value):
            """YAML reads an unquoted ``true`` as a boolean: as a label choice it means ``"true"``."""
            return "true" if value is True else value

    def score(self, task: ValuationTask) -> Scores:
        from dvbench.harness.lm import products  # torch: imported when scoring, not at registration

        model, linears, anchors, candidates = products.gradient_inputs(task, "ekfac")
        sizes = Sizes.of(self.config, {"batch_size": self.config.shard_size}, device=task.model.device,
                         what="valuators.ekfac", log=task.log)
        loop = dict(sizes=sizes, label="ekfac")
        sharded = dict(shard_size=self.config.shard_size, shards=Shards(task.work, task.log))
        scoring = self._scoring()  # the shards' names: entries sharing the work folder may score apart
        mean_path = self.config.aggregate == "mean" and not self.config.per_anchor
        # the anchors' mean gradient before the factors exist: its backward's activations and the
        # factors (1.3 GB on the embedded model's MLPs) are never held together
        mean = products.anchor_mean(model, linears, anchors, progress=task.progress, **loop) if mean_path else None
        factors = self.factors(linears, candidates, task, sizes)
        damping = {name: factors.damping(name, factor=self.config.damping_factor, value=self.config.damping)
                   for name in linears}

        def precondition(name, gradients):
            return factors.inverse(name, gradients, damping[name])

        if mean_path:
            preconditioned = {name: precondition(name, mean.pop(name)) for name in list(mean)}
            del factors  # the candidates' loop needs no factors
            dots = products.sharded_dots(task, preconditioned, candidates, name=f"dots-{scoring}", **loop, **sharded)
            return self.scores(task, dots, stats=ran_at([sizes.record()]))
        matrix = products.pair_matrix(task, model, linears, anchors, candidates,
                                      budget=self.config.max_gradient_gb * 2**30, name=f"pairs-{scoring}",
                                      prepare=precondition, **loop, **sharded)
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix, stats=ran_at([sizes.record()]))

    def _scoring(self) -> str:
        """What the scoring shards depend on beyond the fit: the damping and the layer groups."""
        key = {k: getattr(self.config, k) for k in ("damping", "damping_factor", "max_gradient_gb")}
        return hashlib.sha256(canonical(key).encode()).hexdigest()[:12]

    def factors(self, linears, candidates, task: ValuationTask, sizes: Sizes | None = None) -> Factors:
        """The factors saved in ``task.work`` if complete, else fitted (and saved phase by phase)."""
        from dvbench.harness.lm import ekfac

        labels = ekfac.draws(candidates, task.seed) if self.config.labels == "sampled" else None
        files = WorkFiles(task.work, task.log)
        sizes = sizes or Sizes.of(self.config, {"batch_size": self.config.shard_size}, device=task.model.device,
                                  what="valuators.ekfac", log=task.log)
        fit = dict(labels=labels, sizes=sizes, shard_size=self.config.shard_size, files=files, executor=task.executor)
        bases = _bases(files.read(BASES, read_safetensors), linears)
        eigenvalues = files.read(EIGENVALUES, read_safetensors) if bases is not None else None
        if bases is None:
            with task.progress.task("ekfac covariance", len(candidates), "candidates") as advance:
                covs = ekfac.covariances(task.model, task.tracked, candidates, advance=advance, **fit)
            with task.progress.task("ekfac eigendecomposition", len(covs), "layers") as advance:
                bases = ekfac.eigenbases(covs, advance)
            del covs
            tensors = {f"{name}.{kind}": q for name, pair in bases.items() for kind, q in zip(ekfac.KINDS, pair)}
            files.write(BASES, lambda tmp: write_safetensors(tmp, tensors))
            files.remove(ekfac.COVARIANCE_SUMS)  # summed into the bases: 1 GB on the embedded model's MLPs
        if eigenvalues is None or set(eigenvalues) != set(linears):
            with task.progress.task("ekfac eigenvalue correction", len(candidates), "candidates") as advance:
                eigenvalues = ekfac.corrected_eigenvalues(task.model, task.tracked, candidates, bases,
                                                          advance=advance, **fit)
            files.write(EIGENVALUES, lambda tmp: write_safetensors(tmp, eigenvalues))
            files.remove(ekfac.EIGENVALUE_SUMS)
        return ekfac.Factors(bases, eigenvalues)


def _bases(tensors: dict | None, linears: dict) -> dict | None:
    """Saved eigenbases by layer, if every tracked layer has them."""
    if tensors is None or any(f"{name}.{kind}" not in tensors for name in linears
                              for kind in ("activations", "gradients")):
        return None
    return {name: (tensors[f"{name}.activations"], tensors[f"{name}.gradients"]) for name in linears}


@hookimpl
def dvbench_register_valuators(register):
    register(EkfacValuator)
