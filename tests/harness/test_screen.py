import io

import numpy as np
import polars as pl
from rich.console import Console

from dvbench.harness.ground_truth_tables import FACT_SCHEMA, LDS_SCHEMA, REMOVAL_SCHEMA
from dvbench.harness.leaderboard import (DEFECT_AUC_SCHEMA, OVERLAP_SCHEMA, PER_ANCHOR_SCHEMA, SELECTION_OVERLAP_SCHEMA,
                                         SPEARMAN_SCHEMA)
from dvbench.harness.screen import render

VALUATORS = ["icp", "grad_ip", "ekfac", "one_step", "random"]
BINS = ["<=0.5", ">0.5", ">0.8", ">0.85", ">0.9"]
EVAL_SUBSETS = ["all", "koala", "oasst", "vicuna"]


def _evaluation(metrics, rng) -> pl.DataFrame:
    rows = [{"trainer": "finetune", "selection": "bins", "valuator": v, "subset": b, "eval_subset": e,
             **{m: float(f(rng)) for m, f in metrics.items()}}
            for v in VALUATORS for b in BINS for e in EVAL_SUBSETS]
    return pl.DataFrame(rows)


def paper_tables() -> dict[str, pl.DataFrame]:
    """The tables of specs/paper.yaml in kind and size: five valuators, five bins, two evaluators,
    the ground truth, defects and planted facts; numbers drawn at random."""
    rng = np.random.default_rng(0)
    pairs = [(a, b) for i, a in enumerate(VALUATORS) for b in VALUATORS[i + 1:]]
    with_matrix = VALUATORS[:4]
    tables = {
        "defect_auc": pl.DataFrame([{"valuator": v, "clean": 41, "defective": 7, "auc": 0.6, "auc_low": 0.4,
                                     "auc_high": 0.8, "auprc": 0.2, "auprc_low": 0.1, "auprc_high": 0.4}
                                    for v in VALUATORS], schema=DEFECT_AUC_SCHEMA),
        "evaluation_loss": _evaluation({"loss": lambda r: r.uniform(1, 2), "base_loss": lambda r: 1.5,
                                        "delta": lambda r: r.uniform(-0.5, 0.5)}, rng),
        "evaluation_win_rate": _evaluation({"win_rate": lambda r: r.uniform(0, 100),
                                            "standard_error": lambda r: r.uniform(1, 20),
                                            "n_wins": lambda r: 4.0, "n_wins_base": lambda r: 3.0,
                                            "n_draws": lambda r: 1.0, "n_total": lambda r: 8.0,
                                            "discrete_win_rate": lambda r: 56.25}, rng),
        "fact_attribution": pl.DataFrame([{"valuator": v, "metric": m, "k": k, "value": 0.5, "ci_low": 0.2,
                                           "ci_high": 0.7, "anchors": 8}
                                          for v in with_matrix for m, k in (("recall@1", 1), ("recall@5", 5),
                                                                            ("recall@10", 10), ("mrr", None))],
                                         schema=FACT_SCHEMA),
        "lds": pl.DataFrame([{"valuator": v, "kind": kind, "lds": -0.123, "ci_low": -0.456, "ci_high": 0.789,
                              "anchors": 8, "subsets": 8}
                             for v in VALUATORS for kind in ("per_anchor", "global")
                             if kind == "global" or v in with_matrix], schema=LDS_SCHEMA),
        "overlap": pl.DataFrame([{"a": a, "b": b, "q": q, "k": round(48 * q), "overlap": 0.5, "ci_low": 0.25,
                                  "ci_high": 0.75} for a, b in pairs for q in (0.1, 0.2, 0.5)], schema=OVERLAP_SCHEMA),
        "removal": pl.DataFrame([{"valuator": v, "q": 0.2, "removed": 1.234, "effect": -0.012, "ci_low": -0.034,
                                  "ci_high": 0.056, "random_mean": 1.246, "random_low": 1.2, "random_high": 1.3}
                                 for v in VALUATORS], schema=REMOVAL_SCHEMA),
        "selection_overlap": pl.DataFrame([{"selection": "bins", "subset": s, "a": a, "b": b, "k": 10,
                                            "overlap": 0.4} for s in BINS for a, b in pairs],
                                          schema=SELECTION_OVERLAP_SCHEMA),
        "spearman": pl.DataFrame([{"a": a, "b": b, "rho": 0.3, "p_value": 0.01, "n": 48, "ci_low": 0.1,
                                   "ci_high": 0.5} for a, b in pairs], schema=SPEARMAN_SCHEMA),
        "spearman_per_anchor": pl.DataFrame([{"a": a, "b": b, "anchors": 8, "median": 0.25, "q25": 0.1, "q75": 0.4}
                                             for a, b in pairs if b in with_matrix], schema=PER_ANCHOR_SCHEMA),
    }
    return tables


def _screen(tables, width: int = 100, **options) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    for part in render(tables, seconds={v: 12.3 for v in VALUATORS}, **options):
        console.print(part, highlight=False)
    return out.getvalue().splitlines()


def test_the_paper_runs_screen_fits_sixty_lines_of_a_hundred_columns():
    tables = paper_tables()
    lines = _screen(tables)
    assert len(lines) <= 60, "\n".join(lines)
    assert max(len(line) for line in lines) <= 100, "\n".join(lines)
    text = "\n".join(lines)
    assert "win_rate: win_rate ↑ per bin × valuator" in text and "loss: loss ↓ per bin × valuator" in text
    assert "LDS ↑" in text and "-0.12 [-0.46, 0.79]" in text  # the ground truth, with its interval
    assert "n_total" not in text and "koala" not in text  # no long format, no per-eval-subset rows
    assert "--table NAME" in text and "selection_overlap" in text  # where the rest is


def test_table_one_is_a_pivot_of_bins_by_valuators_with_intervals():
    tables = paper_tables()
    win = tables["evaluation_win_rate"]
    tables["evaluation_win_rate"] = win.with_columns(
        pl.when((pl.col("valuator") == "ekfac") & (pl.col("subset") == ">0.85") & (pl.col("eval_subset") == "all"))
        .then(pl.lit(61.3)).otherwise(pl.col("win_rate")).alias("win_rate"),
        pl.when((pl.col("valuator") == "ekfac") & (pl.col("subset") == ">0.85"))
        .then(pl.lit(4.0)).otherwise(pl.col("standard_error")).alias("standard_error"))
    lines = _screen(tables)
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("win_rate: win_rate"))
    header = next(line for line in lines[start:] if line.split()[:1] == ["bin"])
    assert header.split() == ["bin", *VALUATORS]
    row = next(line for line in lines[start:] if line.split()[:1] == [">0.85"]).split()
    assert row[1 + VALUATORS.index("ekfac")] == "61.3±7.8"  # 1.96 x 4.0, the 95% normal interval
    assert [line.split()[0] for line in lines[start:] if line.split()[:1] and line.split()[0] in BINS][:5] == BINS


def test_agreement_marks_a_shared_matrix_and_drops_long_tables():
    tables = {name: paper_tables()[name] for name in ("spearman", "spearman_per_anchor")}
    tables["spearman_per_anchor"] = tables["spearman_per_anchor"].with_columns(
        pl.when((pl.col("a") == "icp") & (pl.col("b") == "grad_ip")).then(1.0).otherwise(pl.col(c)).alias(c)
        for c in ("median", "q25", "q75"))
    lines = _screen(tables)
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split()[:1] and line.split()[0] in VALUATORS}
    assert rows["grad_ip"][0] == "="  # below the diagonal: per anchor, icp and grad_ip rank alike
    assert rows["icp"][0] == "0.30"  # above it: over the pool
    assert not any("ground truth" in line for line in lines)  # no ground-truth tables, no summary


def test_a_single_valuator_shows_no_agreement():
    tables = {"spearman": pl.DataFrame(schema=SPEARMAN_SCHEMA), "overlap": pl.DataFrame(schema=OVERLAP_SCHEMA)}
    lines = _screen(tables)
    assert not any("Spearman" in line for line in lines)
    assert len(lines) <= 3
