"""``top_k``: the k highest-scored candidates; equal scores ordered by candidate id."""

from __future__ import annotations

from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Scores, Selection
from dvbench.harness.roles import Selector
from dvbench.harness.sizes import Size, count_of


class TopK(Selector):
    name = "top_k"
    version = "1.0.0"

    class Config(Config):
        k: Size = Field(description="How many to keep: a count (`100`), or a fraction of the pool (`0.1`, "
                                    "rounded half up, at least one).")

    def select(self, scores: Scores, *, reference: Scores, seed: int) -> Selection:
        count = count_of(self.config.k, len(scores.candidate_ids), f"top_k (k={self.config.k})")
        return self.selection({f"top_{self.config.k}": scores.top(count)})


@hookimpl
def dvbench_register_selectors(register):
    register(TopK)
