"""``random``: uniform scores from a seeded generator, the baseline every valuator must beat."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator


class RandomValuator(Valuator):
    """Scores drawn uniformly from [0, 1) in candidate order by ``numpy.random.default_rng(seed)``."""

    name = "random"
    version = "1.0.0"
    needs_model = False

    class Config(Config):
        seed: int | None = Field(None, ge=0, description="Generator seed; unset: the spec's `seed`.")

    def score(self, task: ValuationTask) -> Scores:
        seed = task.seed if self.config.seed is None else self.config.seed
        return self.scores(task, np.random.default_rng(seed).random(len(task.candidates)))


@hookimpl
def dvbench_register_valuators(register):
    register(RandomValuator)
