"""``random``: k candidates drawn uniformly without replacement, the baseline subset."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Scores, Selection
from dvbench.harness.roles import Selector
from dvbench.harness.sizes import Size, count_of


class RandomSelector(Selector):
    """Ignores the scores; draws with ``numpy.random.default_rng(seed).choice``."""

    name = "random"
    version = "1.0.0"

    class Config(Config):
        k: Size = Field(description="How many to draw: a count (`100`), or a fraction of the pool (`0.1`, "
                                    "rounded half up, at least one).")
        seed: int | None = Field(None, ge=0, description="Generator seed; unset: the spec's `seed`.")

    def select(self, scores: Scores, *, reference: Scores, seed: int) -> Selection:
        total = len(scores.candidate_ids)
        count = count_of(self.config.k, total, f"random selector (k={self.config.k})")
        rng = np.random.default_rng(seed if self.config.seed is None else self.config.seed)
        drawn = rng.choice(total, size=count, replace=False)
        return self.selection({f"random_{self.config.k}": [scores.candidate_ids[i] for i in drawn]})


@hookimpl
def dvbench_register_selectors(register):
    register(RandomSelector)
