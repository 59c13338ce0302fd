"""``ekfac``: influence through an EK-FAC Gauss–Newton curvature (the paper's Infl; docs/definitions.md § EK-FAC).

Per pair ``∇L(θ, x)ᵀ (Ĝ + λI)⁻¹ ∇L(θ, z)`` over the tracked linear weights, ``L`` the mean
answer loss of the zero-shot sequence, ``Ĝ`` fitted on the candidates
(:mod:`dvbench.harness.lm.ekfac`). Same sign as ``grad_ip``: positive when a step on ``z``
lowers the loss on ``x``.

Phases, each with its progress row:

1. covariance: one forward and backward per candidate, with labels sampled from the model
   (``labels: sampled``, seeded by the spec's seed) or the candidates' own (``true``);
2. eigendecomposition: two per layer, in float64;
3. eigenvalue correction: another forward and backward per candidate, with the same labels;
4. scoring: the anchors' gradients are preconditioned (N is small), never the candidates'. For
   ``aggregate: mean`` the anchors' mean gradient is preconditioned once and each candidate
   costs one more forward and backward; ``fraction_positive`` and ``per_anchor: true`` need every
   pair (:func:`~dvbench.harness.lm.products.pair_matrix`, within ``max_gradient_gb``) and give
   the per-anchor matrix (``mean`` is then taken from it).

The factors are kept in ``task.work``: ``eigenbases.safetensors`` once the eigendecomposition is
done and ``eigenvalues.safetensors`` once the correction is, each written atomically and
verified before reuse (:class:`~dvbench.harness.work.WorkFiles`). A rerun
with the same model, data, template, tracked layers, seed and fitting options reuses them; a
run interrupted during the correction resumes from the eigenbases. ``aggregate``, ``per_anchor``,
``damping``, ``damping_factor`` and ``max_gradient_gb`` change only the scoring, so entries differing in
them share the factors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.artifacts import read_safetensors, write_safetensors
from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator
from dvbench.harness.work import WorkFiles

if TYPE_CHECKING:
    from dvbench.harness.lm.ekfac import Factors

BASES, EIGENVALUES = "eigenbases.safetensors", "eigenvalues.safetensors"


class EkfacValuator(Valuator):
    """Influence functions with EK-FAC: anchor gradients preconditioned by the inverse curvature."""

    name = "ekfac"
    version = "1.1.1"
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
        batch_size: int = Field(8, ge=1, description="Sequences per forward and backward.")
        max_gradient_gb: float = Field(4.0, gt=0, description="Memory (GiB) for all the gradients held when "
                                                              "every pair is needed (the anchors' per-example "
                                                              "gradients of a group of layers, one layer's "
                                                              "transients); layers are grouped to fit.")

        @field_validator("labels", mode="before")
        @classmethod
        def _bare_true(cls, value):
            """YAML reads an unquoted ``true`` as a boolean: as a label choice it means ``"true"``."""
            return "true" if value is True else value

    def score(self, task: ValuationTask) -> Scores:
        from dvbench.harness.lm import products  # torch: imported when scoring, not at registration

        model, linears, anchors, candidates = products.gradient_inputs(task, "ekfac")
        factors = self.factors(model, linears, candidates, task)
        damping = {name: factors.damping(name, factor=self.config.damping_factor, value=self.config.damping)
                   for name in linears}

        def precondition(name, gradients):
            return factors.inverse(name, gradients, damping[name])

        loop = dict(batch_size=self.config.batch_size, progress=task.progress, label="ekfac")
        if self.config.aggregate == "mean" and not self.config.per_anchor:
            mean = products.anchor_mean(model, linears, anchors, **loop)
            preconditioned = {name: precondition(name, g) for name, g in mean.items()}
            del factors, mean  # the candidates' loop needs neither: 1.6 GB on the embedded model's MLPs
            return self.scores(task, products.candidate_dots(model, linears, preconditioned, candidates, **loop))
        matrix = products.pair_matrix(model, linears, anchors, candidates, budget=self.config.max_gradient_gb * 2**30,
                                      prepare=precondition, **loop)
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix)

    def factors(self, model, linears, candidates, task: ValuationTask) -> Factors:
        """The factors saved in ``task.work`` if complete, else fitted (and saved phase by phase)."""
        from dvbench.harness.lm import ekfac

        labels = ekfac.draws(candidates, task.seed) if self.config.labels == "sampled" else None
        fit = dict(labels=labels, batch_size=self.config.batch_size)
        files = WorkFiles(task.work, task.log)
        bases = _bases(files.read(BASES, read_safetensors), linears)
        eigenvalues = files.read(EIGENVALUES, read_safetensors) if bases is not None else None
        if bases is None:
            with task.progress.task("ekfac covariance", len(candidates), "candidates") as advance:
                covs = ekfac.covariances(model, candidates, linears, advance=advance, **fit)
            with task.progress.task("ekfac eigendecomposition", len(covs), "layers") as advance:
                bases = ekfac.eigenbases(covs, advance)
            del covs
            tensors = {f"{name}.{kind}": q for name, pair in bases.items() for kind, q in zip(("activations", "gradients"), pair)}
            files.write(BASES, lambda tmp: write_safetensors(tmp, tensors))
        if eigenvalues is None or set(eigenvalues) != set(linears):
            with task.progress.task("ekfac eigenvalue correction", len(candidates), "candidates") as advance:
                eigenvalues = ekfac.corrected_eigenvalues(model, candidates, linears, bases, advance=advance, **fit)
            files.write(EIGENVALUES, lambda tmp: write_safetensors(tmp, eigenvalues))
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
