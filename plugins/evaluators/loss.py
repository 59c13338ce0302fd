"""``loss``: the held-out answer loss of the fine-tuned model against the model it started from.

``L(θ, x)`` of docs/definitions.md § Data (the mean answer NLL given the query, the template's zero-shot sequence)
averaged over the eval examples that have an answer, for the fine-tuned model (``loss``) and for
the base model (``base_loss``); ``delta = loss − base_loss`` (negative: fine-tuning helped).
Overall and per example ``subset``. The base model's losses are computed once per evaluator.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import EvalResult, EvalTask, ModelRef
from dvbench.harness.roles import Evaluator


class LossEvaluator(Evaluator):
    """Mean answer NLL on the eval set, fine-tuned and base."""

    name = "loss"
    version = "1.0.0"

    class Config(Config):
        batch_size: int = Field(16, ge=1, description="Sequences per forward.")

    def __init__(self, config=None):
        super().__init__(config)
        self._base: dict[tuple, np.ndarray] = {}

    def evaluate(self, task: EvalTask) -> EvalResult:
        examples = [e for e in task.examples if e.output]
        if not examples:
            raise InputError("the loss evaluator needs eval examples with an answer ('output'); this eval set has none")
        key = (task.base, tuple(e.id for e in examples), task.template)
        if key not in self._base:
            self._base[key] = self.losses(task.base, examples, task)
        tuned, base = self.losses(task.model, examples, task), self._base[key]
        groups = defaultdict(list)
        for i, e in enumerate(examples):
            if e.subset:
                groups[e.subset].append(i)
        by_subset = {name: _metrics(tuned[rows], base[rows]) for name, rows in sorted(groups.items())}
        return EvalResult(_metrics(tuned, base), self.name, self.version, self.provenance()["config"], by_subset)

    def losses(self, ref: ModelRef, examples, task: EvalTask) -> np.ndarray:
        """``L(θ, x)`` per example."""
        from dvbench.harness.lm.losses import example_losses

        with task.progress.task("loss", len(examples), "examples") as advance:
            return example_losses(ref, examples, task.template, batch_size=self.config.batch_size, advance=advance)


def _metrics(tuned: np.ndarray, base: np.ndarray) -> dict[str, float]:
    return {"loss": float(tuned.mean()), "base_loss": float(base.mean()), "delta": float((tuned - base).mean())}


@hookimpl
def dvbench_register_evaluators(register):
    register(LossEvaluator)
