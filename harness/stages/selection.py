"""The selection stage: every selector on every valuator's scores.

    selections/<label>.parquet         valuator, subset, rank, candidate_id
"""

from __future__ import annotations

import polars as pl

from dvbench.harness.records import Scores, Selection
from dvbench.harness.spec import Use
from dvbench.harness.stages.context import RunContext

SCHEMA = {"valuator": pl.String, "subset": pl.String, "rank": pl.Int64, "candidate_id": pl.String}


def select(ctx: RunContext, scores: dict[str, Scores]) -> dict[str, dict[str, Selection]]:
    """``{selection label: {valuator label: selection}}``."""
    chosen = {}
    with ctx.progress.task("selection", len(ctx.spec.selection), "selectors") as advance:
        for use in ctx.spec.selection.values():
            chosen[use.label] = _select(ctx, use, scores)
            advance(1)
    return chosen


def _select(ctx: RunContext, use: Use, scores: dict[str, Scores]) -> dict[str, Selection]:
    reference = scores[use.reference] if use.reference else None
    chosen = {label: use.plugin.select(s, reference=reference or s, seed=ctx.seed) for label, s in scores.items()}
    rows = [{"valuator": label, "subset": subset, "rank": rank, "candidate_id": cid}
            for label, selection in chosen.items()
            for subset, ids in selection.subsets.items()
            for rank, cid in enumerate(ids)]
    producer = {**use.plugin.provenance(), "reference": use.reference, "seed": ctx.seed,
                "scores": {label: ctx.store.producer(f"scores/{label}") for label in scores}}
    ctx.store.save_frame(f"selections/{use.label}", producer, pl.DataFrame(rows, schema=SCHEMA))
    return chosen
