"""The model stage: the spec's model resolved once for the whole run (a GGUF converted on first
use), and each split's token report; skipped when no role of the spec needs a model.

Every role is handed the same :class:`~dvbench.harness.records.ModelRef`; the file hashes that
identify its weights are computed once per run (:mod:`dvbench.harness.lm.models` memoizes them
by path, size and modification time). Writes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dvbench.harness.records import ModelRef
from dvbench.harness.spec import Spec
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data


@dataclass(frozen=True)
class Model:
    """The run's model: the reference every role gets and, when resolved, what identifies it
    (``identity``: the reference and the weights' fingerprint) and each split's token report."""

    ref: ModelRef
    identity: dict | None = None
    tokens: dict[str, dict] = field(default_factory=dict)


def needed(spec: Spec) -> bool:
    """Whether any role of ``spec`` loads the model."""
    return any(use.plugin.needs_model for uses in spec.sections().values() for use in uses.values())


def prepare_model(ctx: RunContext, data: Data) -> Model:
    """Resolve the model and tokenize every split with the spec's template, if any role needs it."""
    ref = ctx.spec.settings.model.ref()
    if not needed(ctx.spec):
        ctx.log("model: none needed (no role of this spec loads one)")
        return Model(ref)
    from dvbench.harness.lm import models
    from dvbench.harness.lm.tokens import Encoder

    resolved = models.resolve(ref)
    for note in resolved.notes:
        ctx.log(note)
    ctx.log(f"model: {resolved.description}")
    encoder = Encoder(models.load_tokenizer(ref), ctx.spec.template)
    tokens = {}
    for split in ("candidates", "anchors", "eval"):
        examples = getattr(data, split)
        if split == "eval":
            examples = tuple(e for e in examples if e.output)
        if not examples:
            continue
        encoder.truncated.clear()
        lengths = [len(encoder.zero_shot(e).ids) for e in examples]
        tokens[split] = {"examples": len(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1),
                         "max_tokens": max(lengths), "truncated": dict(encoder.truncated)}
        if encoder.truncated:
            cuts = ", ".join(f"{n} {what}" for what, n in sorted(encoder.truncated.items()))
            ctx.log(f"{split}: cut to fit template limits ({cuts}); see run.json")
    return Model(ref, identity(ref, resolved), tokens)


def identity(ref: ModelRef, resolved) -> dict:
    """What identifies the model in every producer: its reference and its weights' fingerprint
    (``resolved``: :func:`~dvbench.harness.lm.models.resolve`'s)."""
    return {**asdict(ref), "fingerprint": resolved.fingerprint}
