"""``icp``: one-shot in-context probing, the paper's eqs. 1-3 (docs/definitions.md § Zero-shot
and one-shot scores, § Valuators).

For every candidate ``z`` and anchor ``x``: ``s_zs(x)``, the mean log-probability of ``x``'s
answer given its query, and ``s_os(x, z)``, the same with ``z`` (query and answer) placed before
it. ``indicator`` (default) scores ``z`` by the fraction of anchors it helps,
``(1/N) Σ 1[s_os(x, z) > s_zs(x)]`` (strict; ties are counted in the stats), and
``mean_difference`` by the mean of ``s_os − s_zs``.

How it is fast: each anchor's zero-shot score is computed once, and anchors are sorted by
length once; the pairs are planned and scored by
:func:`~dvbench.harness.lm.oneshot.one_shot_loglik`, which runs each demonstration's prefix once
and shares its keys and values across every anchor (a pair whose demonstration the template
cut is scored alone; one whose demonstration was cut away entirely is the zero-shot sequence,
so it ties exactly). The aggregates are :mod:`dvbench.harness.aggregate`'s.

Noise floor (:mod:`~dvbench.harness.lm.noise`): every anchor is scored again alone and
compared with its batched zero-shot score; the largest gap is ``noise_floor`` and the share of
pairs whose |s_os − s_zs| is at most it ``below_noise_floor``, both in the stats.

Saved beside the scores (``details``): ``zero_shot_sum`` (N), ``answer_tokens`` (N) and
``one_shot_sum`` (N x M): every aggregate derives from them. The work is kept in shards of
candidates, so an interrupted run resumes and ``aggregate`` variants share it.
"""

from __future__ import annotations

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

AUTO_TOKENS = 2**20  # where max_batch_tokens: auto starts on a GPU


class IcpValuator(Valuator):
    """ICP (Li et al. 2024; this paper's eq. 3): how often a candidate, as a one-shot
    demonstration, raises the model's likelihood of an anchor's answer."""

    name = "icp"
    version = "1.0.0"
    derived = ("aggregate",)

    class Config(Config):
        aggregate: Literal["indicator", "mean_difference"] = Field(
            "indicator", description="`indicator`: the fraction of anchors with `s_os > s_zs` (eq. 3, strict). "
                                     "`mean_difference`: the mean of `s_os − s_zs`.")
        batch_size: BatchSize = Field(64, description="(Candidate, anchor) pairs per batched forward; candidates "
                                                       "are grouped to fill it. `64` suits a CPU; on a GPU, where "
                                                       "small forwards are launch-bound, raise it (and "
                                                       "`max_batch_tokens`), e.g. `512` and `262144`, or set "
                                                       "both to `auto`: a shard's pairs at first, halved while "
                                                       "out of memory (the CPU: 64).")
        max_batch_tokens: BatchSize = Field(16384, description="Tokens per forward, the prefix's keys included: "
                                                                "bounds memory whatever the number of anchors. "
                                                                f"`auto`: {AUTO_TOKENS} at first on a GPU, halved "
                                                                "while out of memory (the CPU: 16384).")
        padding_side: Literal["right", "left"] = Field("right", description="Where batches are padded; results "
                                                                            "do not depend on it.")
        prefix_cache: bool = Field(True, description="Share each demonstration's keys and values across anchors. "
                                                     "Off: one full sequence per pair (slower, same values; a "
                                                     "check).")
        shard_size: int = Field(64, ge=1, description="Candidates per saved shard: what a resumed run keeps and "
                                                      "one unit of work (a Ray worker takes one at a time, so "
                                                      "M / shard_size units keep that many workers busy).")

    def score(self, task: ValuationTask) -> Scores:
        model, tokenizer = resident(task.model)
        encoder = Encoder(tokenizer, task.template)
        shards = Shards(task.work, task.log)
        anchors, candidates = task.anchors, task.candidates
        if not anchors:
            raise InputError("icp needs at least one anchor; give data.anchors (or data.generated.anchors)")
        sizes = Sizes.of(self.config, {"batch_size": self.config.shard_size * len(anchors),
                                       "max_batch_tokens": AUTO_TOKENS},
                         device=task.model.device, what="valuators.icp", log=task.log)
        zero = shards.get("zero_shot") or shards.put("zero_shot", self._zero_shot(model, encoder, anchors, sizes))
        floor = shards.get("noise_floor") or shards.put("noise_floor", self._noise_floor(model, encoder, anchors, zero))
        order = np.argsort([-len(encoder.zero_shot(x).ids) for x in anchors], kind="stable")
        with task.progress.task(f"icp {len(candidates)} x {len(anchors)}", len(candidates) * len(anchors),
                                "pairs") as advance:
            ref, config, zero_sum = task.model, self.config, zero["zero_shot_sum"]

            def one_shot(block) -> dict[str, np.ndarray]:  # a unit: it may run on a worker
                from dvbench.harness.lm.oneshot import one_shot_loglik  # torch: imported when scoring

                def run(advance):
                    encoder.truncated.clear()
                    return one_shot_loglik(resident(ref)[0], encoder, block, anchors, order, zero_sum,
                                           batch_size=sizes["batch_size"], max_tokens=sizes["max_batch_tokens"],
                                           padding_side=config.padding_side, prefix_cache=config.prefix_cache,
                                           advance=advance)

                sums = sizes.run(run, advance)
                return {"one_shot_sum": sums, "truncated": _cuts(encoder), **sizes.record()}

            blocks = shard_blocks(shards, "one_shot", candidates, one_shot, size=self.config.shard_size,
                                  skipped=lambda n: advance(n * len(anchors)), executor=task.executor)
        one_shot_sum = np.concatenate([b["one_shot_sum"] for b in blocks], axis=1)
        cut = zero["truncated"] + sum(b["truncated"] for b in blocks)
        difference = (one_shot_sum - zero["zero_shot_sum"][:, None]) / zero["answer_tokens"][:, None]  # s_os - s_zs
        stats = {**tie_stats(difference), **noise_stats(difference, float(floor["noise_floor"])),
                 **ran_at([zero, *blocks]),
                 **{f"cut_{what}": int(n) for what, n in zip(("answers", "demonstrations", "queries"), cut)}}
        details = {"zero_shot_sum": zero["zero_shot_sum"], "answer_tokens": zero["answer_tokens"],
                   "one_shot_sum": one_shot_sum}
        return self.scores(task, over_anchors(difference, self.config.aggregate), difference, details=details,
                           stats=stats)

    def _zero_shot(self, model, encoder: Encoder, anchors, sizes: Sizes) -> dict[str, np.ndarray]:
        from dvbench.harness.lm.loglik import answer_loglik  # torch: imported when scoring, not at registration

        def run(advance):
            encoder.truncated.clear()
            return answer_loglik(model, [encoder.zero_shot(x) for x in anchors], batch_size=sizes["batch_size"],
                                 padding_side=self.config.padding_side)

        result = sizes.run(run)
        return {"zero_shot_sum": result.sum, "answer_tokens": result.count, "truncated": _cuts(encoder),
                **sizes.record()}

    def _noise_floor(self, model, encoder: Encoder, anchors, zero) -> dict[str, np.ndarray]:
        """Each anchor scored again alone against its batched zero-shot score."""
        sequences = [encoder.zero_shot(x) for x in anchors]
        batched = zero["zero_shot_sum"] / zero["answer_tokens"]
        return {"noise_floor": np.float64(rescoring_spread(model, sequences, batched))}


def _cuts(encoder: Encoder) -> np.ndarray:
    """Truncations since the encoder's counter was cleared: answers, demonstrations, queries."""
    return np.array([encoder.truncated[k] for k in ("answer", "demonstration", "query")], dtype=np.int64)


@hookimpl
def dvbench_register_valuators(register):
    register(IcpValuator)
