"""The valuation stage: every valuator's scores, reused when saved by the same producer.

    scores/<label>.parquet             candidate_id, score
    scores/<label>.per_anchor.parquet  candidate_id, one column per anchor id (when given)
    scores/<label>.details.npz         the arrays the scores were aggregated from (when given)
    scores/<label>.stats.json          counts the valuator reports: ties, truncations (when given)
    work/<valuator>-<key>/             a valuator's finished shards; key.json says what produced them
                                       (keyed without the anchors where the valuator says its
                                       work does not depend on them: grad_store's store)

A producer is the plugin, its version and config, the data's fingerprints, the template, the
tracked layers, the seed and (for valuators that load it) the model's identity. Scores saved
under another producer are recomputed, with the first difference named in the log.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

from dvbench.harness.artifacts import canonical, fingerprint, json_text, write_text_atomic
from dvbench.harness.lm.models import release
from dvbench.harness.memory import PeakMemory
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.spec import Use
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data
from dvbench.harness.stages.model import Model


def value(ctx: RunContext, data: Data,
          model: Model) -> tuple[dict[str, Scores], dict[str, float], dict[str, PeakMemory]]:
    """``{label: scores}`` for every valuator of the spec, in the spec's order, and the seconds
    and the peak memory (:mod:`~dvbench.harness.memory`) each took in this run (reused scores:
    those of reading them)."""
    settings = ctx.spec.settings
    inputs = {"candidates": fingerprint(data.candidates), "anchors": fingerprint(data.anchors),
              "template": asdict(ctx.spec.template), "tracked": settings.tracked, "seed": settings.seed}
    scores, seconds, peaks = {}, {}, {}
    with ctx.progress.task("valuation", len(ctx.spec.valuators), "valuators") as advance:
        for use in ctx.spec.valuators.values():
            producer = {**use.plugin.provenance(), **inputs}
            if use.plugin.needs_model:
                producer["model"] = model.identity
            advance(0, use.label)
            start = time.perf_counter()
            with PeakMemory() as peaks[use.label]:
                try:
                    scores[use.label] = _scores(ctx, use, data, model, producer)
                finally:
                    release()  # the model the valuator's units shared (lm.models.resident)
            seconds[use.label] = round(time.perf_counter() - start, 3)
            advance(1)
    return scores, seconds, peaks


def _scores(ctx: RunContext, use: Use, data: Data, model: Model, producer: dict) -> Scores:
    """The saved scores if ``producer`` made them; else computed and saved."""
    name = f"scores/{use.label}"
    scores, why = ctx.store.load_scores(name, producer)
    if scores is not None:
        ctx.log(f"{name}: reusing saved scores ({why})")
        return scores
    if why != "not computed yet":
        ctx.log(f"{name}: recomputing, {why}")
    valuator = use.plugin
    work, key = _work(ctx, valuator, producer)
    task = ValuationTask(data.candidates, data.anchors, model.ref, seed=ctx.seed, template=ctx.spec.template,
                         progress=ctx.progress, work=work, tracked=ctx.spec.settings.tracked, executor=ctx.executor,
                         log=ctx.log)
    scores = valuator.score(task)
    if work.is_dir():  # the valuator kept work: say what produced it
        write_text_atomic(work / "key.json", json_text(key, indent=2, sort_keys=True))
    if scores.candidate_ids != tuple(c.id for c in data.candidates):
        raise RuntimeError(f"valuator {use.label!r} ({valuator.name}) returned scores for another pool")
    if scores.stats:
        ctx.log(f"{name}: " + ", ".join(f"{k} {v}" for k, v in scores.stats.items()))
    ctx.store.save_scores(name, producer, scores)
    return scores


def _work(ctx: RunContext, valuator, producer: dict) -> tuple[Path, dict]:
    """The valuator's work folder and what names it: its producer, less the config keys that
    only change the aggregation, so entries differing only in those share it (and less the
    anchors for a valuator whose work does not depend on them)."""
    config = {k: v for k, v in producer["config"].items() if k not in valuator.derived}
    key = {**producer, "config": config}
    if not valuator.anchored_work:
        del key["anchors"]
    digest = hashlib.sha256(canonical(key).encode()).hexdigest()[:16]
    return ctx.store.path(f"work/{valuator.name}-{digest}"), key
