"""``one_step``: one fine-tuning step on each candidate, then every anchor's zero-shot score.

For each candidate ``z``: ``θ' = θ − η ∇L(θ, z)`` on the tracked linear weights (plain SGD,
docs/definitions.md § Valuators), then ``s_zs(x; θ') − s_zs(x; θ)`` for every anchor.
``indicator`` (default; the paper's FT score) is the fraction of anchors whose score rose
(strict), ``mean_difference`` the mean change.

The step is taken in place and undone by copying back the weights saved once at the start:
bit for bit, with no model reload and no copy per candidate. The candidate's gradient comes
from one forward and backward (``Σ_t g_t a_tᵀ`` per layer); the anchors' sequences are the
zero-shot ones, batched as :func:`~dvbench.harness.lm.loglik.answer_loglik` does.
``optimizer: adamw_beta0`` is the paper's released step: ``torch.optim.AdamW`` with betas
(0, 0), weight decay 0.1, after clipping the gradient's norm to 1.0 (lit-gpt's defaults).

Precision: by default (``precision: float64``) the model is loaded in float64 whatever
``model.dtype`` says, and stepped and scored there. A step of η = 2e-5 moves ``s_zs`` by about
1e-6 to 1e-4, the size of float32 rounding: on real Alpaca rows with the float32 embedded model
(tracking the last two blocks' MLPs) the float32 changes were 0.82 to 1.05 times their first-order
value ``η ∇L(x)·∇L(z)``, and 0.90 to 1.03 in float64, where what is left is the true second-order
term (it shrinks with η) and, a few percent, the float32 RMSNorm that transformers' Llama keeps
even in a float64 model. The cost: the model held in float64 (twice float32's memory) and float64
forwards and steps (about 1.5 to 3 times slower on CPU).
``precision: model`` steps and scores in ``model.dtype``.

Noise floor (:mod:`~dvbench.harness.lm.noise`): every anchor is scored again alone and compared
with its batched zero-shot score; the largest gap is ``noise_floor`` and the share of pairs whose
|change| is at most it ``below_noise_floor``, both in the stats.

Saved beside the scores (``details``): ``zero_shot`` (N) and ``stepped`` (N x M), the mean
answer log-probabilities before and after each step. Work is kept in shards of candidates
(:func:`~dvbench.harness.work.shard_blocks`); the aggregates are
:mod:`dvbench.harness.aggregate`'s.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field

from dvbench.harness.aggregate import over_anchors, tie_stats
from dvbench.harness.work import Shards, shard_blocks
from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import BatchSize, Sizes, ran_at
from dvbench.harness.lm.models import resident
from dvbench.harness.lm.noise import noise_stats, rescoring_spread
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator



class OneStepValuator(Valuator):
    """The FT score: how often one gradient step on a candidate raises an anchor's likelihood."""

    name = "one_step"
    version = "1.1.1"
    derived = ("aggregate",)

    class Config(Config):
        aggregate: Literal["indicator", "mean_difference"] = Field(
            "indicator", description="`indicator`: the fraction of anchors whose `s_zs` rose (strict). "
                                     "`mean_difference`: the mean change of `s_zs`.")
        learning_rate: float = Field(2e-5, gt=0, description="The step size η.")
        optimizer: Literal["sgd", "adamw_beta0"] = Field(
            "sgd", description="`sgd`: plain `θ − η∇L`. `adamw_beta0`, paper-faithful: the release's lit-gpt "
                               "step, `torch.optim.AdamW` with betas (0, 0) and weight decay 0.1 after clipping "
                               "the gradient's norm to 1.0.")
        batch_size: BatchSize = Field(64, description="Anchor sequences per forward. `auto`: all the anchors at "
                                                       "first on a GPU, halved while out of memory (the CPU: 64).")
        precision: Literal["float64", "model"] = Field(
            "float64", description="`float64`: load the model in float64, whatever `model.dtype` says, and step "
                                   "and score it there (a step of η = 2e-5 moves `s_zs` by about float32's "
                                   "rounding). `model`: in `model.dtype` (cheaper; in float32 most of the step's "
                                   "effect is rounding).")
        shard_size: int = Field(64, ge=1, description="Candidates per saved shard: what a resumed run keeps and "
                                                      "one unit of work (a Ray worker takes one at a time, so "
                                                      "M / shard_size units keep that many workers busy).")

    def score(self, task: ValuationTask) -> Scores:
        import torch  # imported when scoring, not at registration

        from dvbench.harness.lm.grads import tracked_linears

        if not task.anchors:
            raise InputError("one_step needs at least one anchor; give data.anchors (or data.generated.anchors)")
        ref = task.model if self.config.precision == "model" else replace(task.model, dtype="float64")
        model, tokenizer = resident(ref)
        encoder = Encoder(tokenizer, task.template)
        anchors = [encoder.zero_shot(x) for x in task.anchors]
        shards = Shards(task.work, task.log)
        sizes = Sizes.of(self.config, {"batch_size": len(anchors)}, device=task.model.device,
                         what="valuators.one_step", log=task.log)
        zero = shards.get("zero_shot") or shards.put("zero_shot", {
            "zero_shot": sizes.run(lambda _: self._scores(model, anchors, sizes["batch_size"])), **sizes.record()})
        floor = shards.get("noise_floor") or shards.put(
            "noise_floor", {"noise_floor": np.float64(rescoring_spread(model, anchors, zero["zero_shot"]))})
        tracked = task.tracked
        with task.progress.task(f"one_step {len(task.candidates)} x {len(anchors)}",
                                len(task.candidates) * len(anchors), "pairs") as advance:
            def stepped(block) -> dict[str, np.ndarray]:  # a unit: it may run on a worker
                model = resident(ref)[0]
                linears = tracked_linears(model, tracked)
                weights = [m.weight for m in linears.values()]
                saved = [w.detach().clone() for w in weights]
                values = np.empty((len(anchors), len(block)))

                def candidate(z) -> np.ndarray:
                    try:
                        self._step(model, linears, encoder.training(z))
                        return self._scores(model, anchors, sizes["batch_size"])
                    finally:  # the resident model is left as found (and as it was for another try)
                        with torch.no_grad():
                            for w, original in zip(weights, saved):
                                w.copy_(original)

                for j, z in enumerate(block):
                    values[:, j] = sizes.run(lambda _: candidate(z))
                    advance(len(anchors))
                return {"stepped": values, **sizes.record()}

            blocks = shard_blocks(shards, "stepped", task.candidates, stepped, size=self.config.shard_size,
                                  skipped=lambda n: advance(n * len(anchors)), executor=task.executor)
        stepped = np.concatenate([b["stepped"] for b in blocks], axis=1)
        difference = stepped - zero["zero_shot"][:, None]
        return self.scores(task, over_anchors(difference, self.config.aggregate), difference,
                           details={"zero_shot": zero["zero_shot"], "stepped": stepped},
                           stats={**tie_stats(difference), **noise_stats(difference, float(floor["noise_floor"])),
                                  **ran_at([zero, *blocks])})

    @staticmethod
    def _scores(model, anchors, batch_size: int) -> np.ndarray:
        from dvbench.harness.lm.loglik import answer_loglik

        return answer_loglik(model, anchors, batch_size=batch_size).mean

    def _step(self, model, linears, sequence) -> None:
        """Move the tracked weights one step down ``∇L(θ, z)``, in place."""
        import torch

        from dvbench.harness.lm.grads import per_example_grads

        found = per_example_grads(model, [sequence], linears)
        weights = [m.weight for m in linears.values()]
        grads = [found[name][0].to(m.weight.dtype) for name, m in linears.items()]
        if self.config.optimizer == "sgd":
            with torch.no_grad():
                for w, g in zip(weights, grads):
                    w.add_(g, alpha=-self.config.learning_rate)
            return
        for w, g in zip(weights, grads):
            w.grad = g
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        torch.optim.AdamW(weights, lr=self.config.learning_rate, betas=(0.0, 0.0), weight_decay=0.1).step()
        for w in weights:
            w.grad = None


@hookimpl
def dvbench_register_valuators(register):
    register(OneStepValuator)
