"""The leaderboard stage: every table computed from the run's scores, selections and
evaluations (pure functions of :mod:`dvbench.harness.leaderboard`), then the plots.

    leaderboard/<table>.{parquet,csv,md}
    leaderboard/plots/*.png            Spearman heatmap, scatter of two valuators, overlap by percentile
"""

from __future__ import annotations

import polars as pl

from dvbench.harness import leaderboard, plots, report
from dvbench.harness.records import Scores, Selection
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data


def tables(ctx: RunContext, data: Data, scores: dict[str, Scores], selections: dict[str, dict[str, Selection]],
           evaluations: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Compute, save and plot every leaderboard table; ``{table name: frame}``."""
    options = ctx.spec.settings.leaderboard
    frame = leaderboard.scores_frame(scores)
    out = {"spearman": leaderboard.spearman(frame), "overlap": leaderboard.overlap(frame, options.overlap_fractions)}
    if sum(s.per_anchor is not None for s in scores.values()) >= 2:
        out["spearman_per_anchor"] = leaderboard.spearman_per_anchor(scores)
    if any("defect" in c.meta for c in data.candidates):
        out["defect_auc"] = leaderboard.defect_auc(frame, [c.meta.get("defect") not in (None, "", False, 0)
                                                           for c in data.candidates])
    if selections:
        out["selection_overlap"] = leaderboard.selection_overlap(selections)
    for label, evaluated in evaluations.items():
        out[f"evaluation_{label}"] = leaderboard.evaluation(evaluated)
    store = ctx.store
    producer = {"scores": {label: store.producer(f"scores/{label}") for label in scores},
                "selections": {label: store.producer(f"selections/{label}") for label in selections},
                "evaluations": {label: store.producer(f"evaluations/{label}") for label in evaluations},
                "leaderboard": options.model_dump(mode="json")}
    for name, table in out.items():
        store.save_frame(f"leaderboard/{name}", producer, table, markdown=report.markdown)
    plots.render(store.root, options.scatter)
    return out
