"""``repsim``: representation similarity (docs/definitions.md § Valuators).

``v(x, z) = cos(h(x), h(z))``, ``h(e)`` the model's hidden states at ``layer`` averaged over
the answer tokens of ``e``'s training sequence (the answer and its EOS, in the context of the
template's query: the sequence every gradient valuator sees), as
:func:`~dvbench.harness.lm.embed.mean_hidden` computes it. ``layer`` indexes the embeddings
and the blocks' outputs as transformers' ``output_hidden_states`` lists them: ``0`` the token
embeddings, ``k`` block ``k``'s output, ``-1`` (default) the last, after the final norm.

A cosine, unitless, in [−1, 1]: higher when the candidate's answer is represented like the
anchor's. ``mean`` averages over anchors; ``fraction_positive`` is the share of anchors with a
positive cosine. Cost: one forward per sequence (no backward), each anchor once; the
candidates' mean states are kept in shards, which run on the task's executor.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import BatchSize, Sizes, ran_at
from dvbench.harness.lm.models import resident
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator
from dvbench.harness.work import Shards, shard_blocks

SHARD = 256  # candidates per saved shard


class RepsimValuator(Valuator):
    """The cosine similarity of the candidate's and each anchor's mean answer hidden states."""

    name = "repsim"
    version = "1.0.0"
    derived = ("aggregate",)

    class Config(Config):
        aggregate: Literal["mean", "fraction_positive"] = Field(
            "mean", description="`mean`: the mean cosine over anchors. `fraction_positive`: the fraction of "
                                "anchors with a positive cosine.")
        layer: int = Field(-1, description="Which hidden states: `0` the token embeddings, `k` block `k`'s "
                                           "output, `-1` the last (after the final norm); negative counts back.")
        batch_size: BatchSize = Field(16, description="Sequences per forward. `auto`: a shard's at first on a GPU, "
                                                       "halved while out of memory (the CPU: 16).")

    def score(self, task: ValuationTask) -> Scores:
        from dvbench.harness.lm.embed import mean_hidden  # torch: imported when scoring, not at registration

        if not task.anchors:
            raise InputError("repsim needs at least one anchor; give data.anchors (or data.generated.anchors)")
        tokenizer = resident(task.model)[1]
        encoder = Encoder(tokenizer, task.template)
        shards = Shards(task.work, task.log)
        options = dict(layer=self.config.layer, answer_only=True, key="repsim's layer")
        sizes = Sizes.of(self.config, {"batch_size": SHARD}, device=task.model.device, what="valuators.repsim",
                         log=task.log)

        with task.progress.task("repsim", len(task.anchors) + len(task.candidates), "sequences") as advance:
            ref = task.model  # what a unit needs, not the whole task

            def states(examples) -> dict[str, np.ndarray]:  # a unit of work: the resident model, not a capture
                sequences = [encoder.training(e) for e in examples]
                found = sizes.run(lambda counted: mean_hidden(resident(ref)[0], sequences, advance=counted,
                                                              batch_size=sizes["batch_size"], **options), advance)
                return {"states": found, **sizes.record()}

            anchors = shards.get("anchors")
            if anchors is None:
                anchors = shards.put("anchors", states(task.anchors))
            else:
                advance(len(task.anchors))
            blocks = shard_blocks(shards, "candidates", task.candidates, states, size=SHARD, skipped=advance,
                                  executor=task.executor)
        matrix = _unit(anchors["states"]) @ _unit(np.concatenate([b["states"] for b in blocks])).T
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix,
                           stats=ran_at([anchors, *blocks]))


def _unit(rows: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm, in float64 (a zero row stays zero)."""
    rows = rows.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


@hookimpl
def dvbench_register_valuators(register):
    register(RepsimValuator)
