"""``icp``: one-shot in-context probing, SPEC.md eqs. 1-3.

For every candidate ``z`` and anchor ``x``: ``s_zs(x)``, the mean log-probability of ``x``'s
answer given its query, and ``s_os(x, z)``, the same with ``z`` (query and answer) placed before
it. ``indicator`` (default) scores ``z`` by the fraction of anchors it helps,
``(1/N) Σ 1[s_os(x, z) > s_zs(x)]`` (strict; ties are counted in the stats), and
``mean_difference`` by the mean of ``s_os − s_zs``.

How it is fast: each anchor's zero-shot score is computed once; for each candidate the
demonstration prefix ``[BOS] z.query z.answer separator`` is run once and its keys and values are
shared by batched forwards of every anchor's suffix (:func:`~dvbench.harness.lm.prefix.prefix_loglik`);
anchors are sorted by length once; the output head and log-softmax run only at answer positions;
batches are bounded in anchors and tokens. A pair whose demonstration the template had to cut
is scored on its own full sequence; one whose demonstration was cut away entirely is the
zero-shot sequence, so it ties exactly.

Saved beside the scores (``details``): ``zero_shot_sum`` (N), ``answer_tokens`` (N) and
``one_shot_sum`` (N x M): every aggregate derives from them. The work is kept in shards of
candidates, so an interrupted run resumes and ``aggregate`` variants share it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dvbench.harness.artifacts import Shards
from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.models import load_model
from dvbench.harness.lm.tokens import Encoder, Sequence
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator

SHARD = 64  # candidates per saved shard
GROUP = 1  # batches of pairs per group of candidates whose prefixes run together


class IcpValuator(Valuator):
    """ICP (Li et al. 2024; this paper's eq. 3): how often a candidate, as a one-shot
    demonstration, raises the model's likelihood of an anchor's answer."""

    name = "icp"
    version = "1.0.0"
    derived = ("aggregate",)

    class Config(Config):
        aggregate: Literal["indicator", "mean_difference"] = Field(
            "indicator", description="indicator: fraction of anchors with s_os > s_zs (eq. 3); "
                                     "mean_difference: mean of s_os - s_zs.")
        batch_size: int = Field(64, ge=1, description="(Candidate, anchor) pairs per batched forward; "
                                                      "candidates are grouped to fill it.")
        max_batch_tokens: int = Field(16384, ge=1, description="Tokens per forward, prefix keys included; "
                                                               "bounds memory.")
        padding_side: Literal["right", "left"] = Field("right", description="Where batches are padded; "
                                                                            "results do not depend on it.")
        prefix_cache: bool = Field(True, description="Share each demonstration's keys and values across "
                                                     "anchors; off: one full sequence per pair (slower, same values).")

    def score(self, task: ValuationTask) -> Scores:
        model, tokenizer = load_model(task.model)
        encoder = Encoder(tokenizer, task.template)
        shards = Shards(task.work)
        anchors, candidates = task.anchors, task.candidates
        if not anchors:
            raise InputError("icp needs at least one anchor; give data.anchors (or data.generated.anchors)")
        zero = shards.get("zero_shot") or shards.put("zero_shot", self._zero_shot(model, encoder, anchors))
        order = np.argsort([-len(encoder.zero_shot(x).ids) for x in anchors], kind="stable")
        blocks = []
        with task.progress.task(f"icp {len(candidates)} x {len(anchors)}", len(candidates) * len(anchors),
                                "pairs") as advance:
            for start in range(0, len(candidates), SHARD):
                block = candidates[start:start + SHARD]
                shard = shards.get(f"one_shot-{start:08d}")
                if shard is None:
                    shard = shards.put(f"one_shot-{start:08d}",
                                       self._one_shot(model, encoder, block, anchors, order, zero, advance))
                else:
                    advance(len(block) * len(anchors))
                blocks.append(shard)
        one_shot = np.concatenate([b["one_shot_sum"] for b in blocks], axis=1)
        cut = zero["truncated"] + sum(b["truncated"] for b in blocks)
        return self._aggregate(task, zero["zero_shot_sum"], zero["answer_tokens"], one_shot, cut)

    def _zero_shot(self, model, encoder: Encoder, anchors) -> dict[str, np.ndarray]:
        from dvbench.harness.lm.loglik import answer_loglik  # torch: imported when scoring, not at registration

        encoder.truncated.clear()
        result = answer_loglik(model, [encoder.zero_shot(x) for x in anchors], batch_size=self.config.batch_size,
                               padding_side=self.config.padding_side)
        return {"zero_shot_sum": result.sum, "answer_tokens": result.count, "truncated": _cuts(encoder)}

    def _one_shot(self, model, encoder: Encoder, block, anchors, order, zero, advance) -> dict[str, np.ndarray]:
        """``one_shot_sum`` (anchors x block) and the truncations counted on the way. Candidates
        go in groups of about ``GROUP`` batches of pairs, so that pairs sorted by length fill
        batches of similar lengths (little padding)."""
        from dvbench.harness.lm.loglik import answer_loglik
        from dvbench.harness.lm.prefix import prefix_loglik

        encoder.truncated.clear()
        sums = np.empty((len(anchors), len(block)))
        group = max(1, -(-GROUP * self.config.batch_size // len(anchors)))
        for first in range(0, len(block), group):
            prefixes, shared, alone = [], [], []
            for j in range(first, min(first + group, len(block))):
                query, answer = encoder.pieces(block[j])
                whole = len(encoder.bos) + len(query) + len(answer) + len(encoder.separator)
                for i in order:
                    seq = encoder.one_shot(block[j], anchors[i])
                    if seq.prefix == len(encoder.bos):  # the demonstration was cut away: zero-shot
                        sums[i, j] = zero["zero_shot_sum"][i]
                    elif self.config.prefix_cache and seq.prefix == whole and seq.answer_start > whole:
                        if not prefixes or prefixes[-1][0] != j:
                            prefixes.append((j, seq.ids[:whole]))
                        shared.append(((i, j), (len(prefixes) - 1, Sequence(seq.ids[whole:], seq.answer_start - whole))))
                    else:
                        alone.append(((i, j), seq))
            if shared:
                shared.sort(key=lambda item: -len(item[1][1].ids))  # stable: same anchors side by side
                values = prefix_loglik(model, [p for _, p in prefixes], [item for _, item in shared],
                                       batch_size=self.config.batch_size, max_tokens=self.config.max_batch_tokens,
                                       padding_side=self.config.padding_side)
                for ((i, j), _), value in zip(shared, values):
                    sums[i, j] = value
            if alone:
                values = answer_loglik(model, [seq for _, seq in alone], batch_size=self.config.batch_size,
                                       padding_side=self.config.padding_side).sum
                for ((i, j), _), value in zip(alone, values):
                    sums[i, j] = value
            advance(len(anchors) * (min(first + group, len(block)) - first))
        return {"one_shot_sum": sums, "truncated": _cuts(encoder)}

    def _aggregate(self, task, zero_sum, tokens, one_shot, cut) -> Scores:
        difference = (one_shot - zero_sum[:, None]) / tokens[:, None]  # s_os - s_zs, anchors x candidates
        if self.config.aggregate == "indicator":
            values = (difference > 0).mean(axis=0)
        else:
            values = difference.mean(axis=0)
        stats = {"pairs": int(difference.size), "ties": int((difference == 0).sum()),
                 **{f"cut_{what}": int(n) for what, n in zip(("answers", "demonstrations", "queries"), cut)}}
        details = {"zero_shot_sum": zero_sum, "answer_tokens": tokens, "one_shot_sum": one_shot}
        return self.scores(task, values, difference, details=details, stats=stats)


def _cuts(encoder: Encoder) -> np.ndarray:
    """Truncations since the encoder's counter was cleared: answers, demonstrations, queries."""
    return np.array([encoder.truncated[k] for k in ("answer", "demonstration", "query")], dtype=np.int64)


@hookimpl
def dvbench_register_valuators(register):
    register(IcpValuator)
