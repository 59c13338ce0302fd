"""The model stage: the spec's model resolved once for the whole run (a GGUF converted on first
use), and each split's token report; skipped when no role of the spec needs a model.

Every role is handed the same :class:`~dvbench.harness.records.ModelRef`, on the device
``model.device`` resolves to (:func:`placement`, once per run, before the data stage); the file
hashes that identify its weights are computed once per run (:mod:`dvbench.harness.lm.models`
memoizes them by path, size and modification time). Writes nothing.

The model's identity, which every content address of scores, models and evaluations includes,
names the device's type when it is not the CPU (``"device": "cuda"``): CUDA kernels round
differently, so a GPU run's results get their own addresses and never mix with a CPU run's;
the index does not enter (``cuda:0`` and ``cuda:1`` share), and a CPU run's identity is what it
was before devices existed (``auto`` on a CPU machine and ``cpu`` give the same addresses).
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


def placement(spec: Spec) -> str:
    """Where the run's model runs (``cpu``, ``cuda:N``); ``cpu`` when no role needs a model.
    Raises the InputError of a CUDA device torch does not see."""
    if not needed(spec):
        return "cpu"
    from dvbench.harness.lm.devices import resolve_device

    return resolve_device(spec.settings.model.device)


def devices(spec: Spec, device: str) -> dict[str, str]:
    """run.json's ``devices``: where each role that loads the model ran, by ``section.label``
    (the ground truth's retrains and losses under ``ground_truth``)."""
    found = {f"{section}.{use.label}": device for section, uses in spec.sections().items()
             for use in uses.values() if use.plugin.needs_model}
    return {**found, "ground_truth": device} if spec.settings.ground_truth is not None else found


def identity(ref: ModelRef, fingerprint: str) -> dict:
    """What identifies the run's model in content addresses: the reference less its device, the
    weights' fingerprint, and the device's type unless it is the CPU (see the module docstring)."""
    record = {k: v for k, v in asdict(ref).items() if k != "device"}
    kind = ref.device.partition(":")[0]
    return {**record, "fingerprint": fingerprint, **({"device": kind} if kind != "cpu" else {})}


def prepare_model(ctx: RunContext, data: Data, device: str = "cpu") -> Model:
    """Resolve the model (on ``device``, from :func:`placement`) and tokenize every split with the
    spec's template, if any role needs it."""
    ref = ctx.spec.settings.model.ref(device)
    if not needed(ctx.spec):
        ctx.log("model: none needed (no role of this spec loads one)")
        return Model(ref)
    from dvbench.harness.lm import models
    from dvbench.harness.lm.tokens import Encoder

    resolved = models.resolve(ref)
    for note in resolved.notes:
        ctx.log(note)
    ctx.log(f"model: {resolved.description}, on {device}")
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
    return Model(ref, identity(ref, resolved.fingerprint), tokens)
