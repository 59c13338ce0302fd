"""``L(θ, x)`` of docs/definitions.md § Data for a whole set of examples: the mean answer NLL of each example's
zero-shot sequence under one model, loaded from its reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dvbench.harness.records import Example, ModelRef
from dvbench.harness.template import Template


def example_losses(ref: ModelRef, examples: Sequence[Example], template: Template, *, batch_size: int = 16,
                   advance: Callable[[int], None] | None = None) -> np.ndarray:
    """``L(θ, x)`` per example (float64), in the examples' order."""
    from dvbench.harness.lm.loglik import answer_loglik
    from dvbench.harness.lm.models import load_model
    from dvbench.harness.lm.tokens import Encoder

    model, tokenizer = load_model(ref)
    encoder = Encoder(tokenizer, template)
    result = answer_loglik(model, [encoder.zero_shot(e) for e in examples], batch_size=batch_size, advance=advance)
    return -result.mean
