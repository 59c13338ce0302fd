"""The leaderboard stage: every table computed from the run's scores, selections, evaluations
and ground truth (pure functions of :mod:`dvbench.harness.leaderboard` and
:mod:`dvbench.harness.ground_truth_tables`, each interval at ``leaderboard.level`` over
``leaderboard.bootstrap`` resamples seeded by the spec's seed), then the plots.

    leaderboard/<table>.{parquet,csv,md}
    leaderboard/plots/*.png            Spearman heatmap, scatter of two valuators, overlap by
                                       percentile; LDS and removal effect with the ground truth
"""

from __future__ import annotations

import polars as pl

from dvbench.harness import ground_truth_tables, leaderboard, plots, report
from dvbench.harness.records import Scores, Selection
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data
from dvbench.harness.stages.ground_truth import Measured


def tables(ctx: RunContext, data: Data, scores: dict[str, Scores], selections: dict[str, dict[str, Selection]],
           evaluations: dict[str, pl.DataFrame], truth: Measured | None = None) -> dict[str, pl.DataFrame]:
    """Compute, save and plot every leaderboard table; ``{table name: frame}``."""
    options = ctx.spec.settings.leaderboard
    ci = {"level": options.level, "B": options.bootstrap, "seed": ctx.seed}
    frame = leaderboard.scores_frame(scores)
    out = {"spearman": leaderboard.spearman(frame, **ci),
           "overlap": leaderboard.overlap(frame, options.overlap_fractions, **ci)}
    if sum(s.per_anchor is not None for s in scores.values()) >= 2:
        out["spearman_per_anchor"] = leaderboard.spearman_per_anchor(scores)
    if any("defect" in c.meta for c in data.candidates):
        out["defect_auc"] = leaderboard.defect_auc(frame, [c.meta.get("defect") not in (None, "", False, 0)
                                                           for c in data.candidates], **ci)
    if truth is not None:
        out["lds"] = ground_truth_tables.lds(scores, truth.bank(tuple(c.id for c in data.candidates)), **ci)
        removals = truth.removals()
        if removals is not None:
            out["removal"] = ground_truth_tables.removal(removals, **ci)
    supporting = {a.id: tuple(a.meta["supported_by"]) for a in data.anchors if a.meta.get("supported_by")}
    if supporting and any(s.per_anchor is not None for s in scores.values()):
        out["fact_attribution"] = ground_truth_tables.fact_attribution(scores, supporting, **ci)
    if selections:
        out["selection_overlap"] = leaderboard.selection_overlap(selections)
    for label, evaluated in evaluations.items():
        out[f"evaluation_{label}"] = leaderboard.evaluation(evaluated)
    store = ctx.store
    producer = {"scores": {label: store.producer(f"scores/{label}") for label in scores},
                "ground_truth": None if truth is None else store.producer("ground_truth/losses"),
                "selections": {label: store.producer(f"selections/{label}") for label in selections},
                "evaluations": {label: store.producer(f"evaluations/{label}") for label in evaluations},
                "leaderboard": options.model_dump(mode="json")}
    stale = [name for name in out if not _saved(store, name, producer, out[name])]
    for name in stale:
        store.save_frame(f"leaderboard/{name}", producer, out[name], markdown=report.markdown)
    drawn = store.path("leaderboard/plots")
    expected = {f"{n}.png" for n in ("spearman", "scatter", "overlap", "lds", "removal")
                if n in out or n in ("spearman", "scatter", "overlap")} if len(scores) >= 2 else set()
    if stale or not all((drawn / name).is_file() for name in expected):
        plots.render(store.root, options.scatter)
    return out


def _saved(store, name: str, producer: dict, table: pl.DataFrame) -> bool:
    """Whether ``table`` is already saved, whole, by the same producer: then neither it nor the
    plots drawn from it are written again."""
    files, _ = store.find(f"leaderboard/{name}", producer)
    return files is not None and pl.read_parquet(files[".parquet"]).equals(table)
