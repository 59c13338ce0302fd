"""The short screen of a run's leaderboards, what ``dvbench run`` ends with and ``dvbench
leaderboard DIR`` prints: the headline numbers, each with its direction (↑ higher is better, ↓
lower) and interval, as pivots, and where the whole tables are.

- per evaluator and selection, the paper's Table 1: its headline metric per bin (rows) and
  valuator (columns), on the whole eval set; ``± h``: the half-width of the normal interval from
  the evaluator's ``standard_error`` at the run's level, where it gives one;
- the ground truth per valuator (:func:`~dvbench.harness.leaderboard.summary`);
- agreement between valuators (not quality): Spearman's rho over the pool above the diagonal,
  the median per-anchor rho below it; a rho of exactly 1 (two valuators ranking alike, as two
  aggregates of one shared matrix do) is marked ``=``, not a finding.

Long-format tables (per eval subset, selection overlaps, top-q overlaps) stay in the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist

import polars as pl
from rich.console import Group
from rich.text import Text

from dvbench.harness.leaderboard import summary

# An evaluator's headline metric, the first of these its table has (else its first metric), and
# which way it is better.
HEADLINE = {"win_rate": "↑", "loss": "↓"}
WIDTH = 100  # the screen's columns, and at most 60 lines for the paper's spec
KEYS = ("trainer", "selection", "valuator", "subset", "eval_subset")
SAME = "="


def render(tables: Mapping[str, pl.DataFrame], *, level: float = 0.95, seconds: Mapping[str, float | None] | None = None,
           out: Path | None = None) -> list:
    """The screen's parts (rich renderables and lines of text), in order."""
    parts = []
    for name, frame in tables.items():
        if name.startswith("evaluation_"):
            parts += evaluation_pivots(name.removeprefix("evaluation_"), frame, level)
    if any(name in tables for name in ("lds", "removal", "fact_attribution", "defect_auc")):
        if seconds is None:
            seconds = {label: None for label in _valuators(tables)}
        parts.append(valuator_summary(summary(tables, seconds), level))
    if "spearman" in tables and tables["spearman"].height:
        parts.append(agreement(tables["spearman"], tables.get("spearman_per_anchor")))
    where = f"{out}/leaderboard" if out is not None else "leaderboard"
    parts.append(f"whole tables in {where}/<table>.{{parquet,csv,md}}: {', '.join(sorted(tables))}; print one with "
                 f"`dvbench leaderboard {out or 'DIR'} --table NAME [--format md|csv|json]`")
    return parts


def _valuators(tables: Mapping[str, pl.DataFrame]) -> list[str]:
    labels = []
    for name in ("lds", "removal", "fact_attribution", "defect_auc"):
        if name in tables:
            labels += [v for v in tables[name]["valuator"].unique(maintain_order=True) if v not in labels]
    return labels


def headline(frame: pl.DataFrame) -> str | None:
    """The metric a pivot shows of an evaluation table."""
    metrics = [c for c in frame.columns if c not in KEYS and c != "model"]
    return next((m for m in HEADLINE if m in metrics), metrics[0] if metrics else None)


def evaluation_pivots(evaluator: str, frame: pl.DataFrame, level: float) -> list:
    """One bin x valuator table per (trainer, selection) of an evaluation table."""
    metric = headline(frame)
    if metric is None or "eval_subset" not in frame.columns:
        return []
    whole = frame.filter(pl.col("eval_subset") == "all")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    pivots = []
    for (trainer, selection), rows in whole.group_by(["trainer", "selection"], maintain_order=True):
        arrow = HEADLINE.get(metric, "")
        base = f"base_{metric}"
        notes = [f"±: {level:.0%} interval from standard_error" if "standard_error" in rows.columns else "",
                 f"base model {_number(rows[base].mean(), 3)}" if base in rows.columns else ""]
        table = _table()
        valuators = rows["valuator"].unique(maintain_order=True).to_list()
        digits = 1 if (rows[metric].abs().max() or 0) >= 10 else 3
        table.add_column("bin")
        for valuator in valuators:
            table.add_column(valuator, justify="right", no_wrap=True)
        for subset in rows["subset"].unique(maintain_order=True):
            cells = []
            for valuator in valuators:
                row = rows.filter((pl.col("subset") == subset) & (pl.col("valuator") == valuator))
                if not row.height:
                    cells.append("—")
                    continue
                value = row[metric][0]
                error = row["standard_error"][0] if "standard_error" in row.columns else None
                cells.append(_number(value, digits) + (f"±{_number(z * error, digits)}" if _finite(error) else ""))
            table.add_row(subset, *cells)
        pivots.append(_framed(f"{evaluator}: {metric} {arrow} per bin × valuator ({trainer} on {selection})", table,
                              "; ".join(n for n in notes if n)))
    return pivots


def _with_interval(value, low, high, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + ("" if low is None or high is None else f" [{low:.{digits}f}, {high:.{digits}f}]")


def valuator_summary(frame: pl.DataFrame, level: float):
    """The headline numbers per valuator (:func:`~dvbench.harness.leaderboard.summary`), each with
    its direction and interval; a column no valuator has a number in is left out."""
    columns = {  # header: (the frame's column, how a row shows it)
        "LDS ↑": ("lds", lambda r: _with_interval(r["lds"], r["lds_low"], r["lds_high"], 2)
                  + ("" if r["lds_kind"] in (None, "per_anchor") else "*")),
        "removal ↑": ("removal", lambda r: _with_interval(r["removal"], r["removal_low"], r["removal_high"], 3)),
        "MRR ↑": ("fact_mrr", lambda r: _with_interval(r["fact_mrr"], None, None, 2)),
        "AUC ↑": ("auc", lambda r: _with_interval(r["auc"], None, None, 2)),
        "AUPRC ↑": ("auprc", lambda r: _with_interval(r["auprc"], None, None, 2)),
        "s": ("seconds", lambda r: _with_interval(r["seconds"], None, None, 1)),
    }
    shown = {header: show for header, (column, show) in columns.items() if frame[column].is_not_null().any()}
    notes = {"removal ↑": "removal: nats", "MRR ↑": "MRR: planted facts", "AUC ↑": "AUC, AUPRC: defects",
             "LDS ↑": "* global LDS (no per-anchor matrix)", "s": "s: seconds to score"}
    table = _table()
    table.add_column("valuator", no_wrap=True)
    for header in shown:  # on a narrow screen an interval wraps below its value
        table.add_column(header, justify="right", no_wrap=header not in ("LDS ↑", "removal ↑"))
    for row in frame.iter_rows(named=True):
        table.add_row(row["valuator"], *(show(row) for show in shown.values()))
    return _framed(f"per valuator: ↑ higher is better, [{level:.0%} interval]", table,
                   "; ".join(note for header, note in notes.items() if header in shown))


def agreement(spearman: pl.DataFrame, per_anchor: pl.DataFrame | None):
    """Spearman's rho of every pair: over the pool above the diagonal, per anchor below."""
    labels = list(dict.fromkeys([*spearman["a"], *spearman["b"]]))
    cell = {(r["a"], r["b"]): r["rho"] for r in spearman.iter_rows(named=True)}
    if per_anchor is not None:
        cell |= {(r["b"], r["a"]): (r["median"], r["q25"], r["q75"]) for r in per_anchor.iter_rows(named=True)}
    table = _table()
    table.add_column("")
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    for a in labels:
        row = []
        for b in labels:
            value = cell.get((a, b))
            if a == b:
                row.append("")
            elif isinstance(value, tuple):  # per anchor: the median, its quartiles decide "the same"
                row.append(SAME if all(v == 1.0 for v in value) else _rho(value[0]))
            else:
                row.append(SAME if value == 1.0 else _rho(value) if (a, b) in cell else "")
        if any(row):
            table.add_row(a, *row)
    return _framed("agreement, not quality: Spearman ρ over the pool (above the diagonal), median per anchor "
                   f"(below); {SAME}: exactly 1, the same ranking (one shared matrix, say), not a finding", table)


def _table():
    from rich import box
    from rich.table import Table

    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))  # 2 spaces between columns


def _framed(title: str, table, notes: str = ""):
    """``table`` under its title and above its notes, both wrapped at the screen's width (a
    table's own title and caption wrap at the table's), then a blank line."""
    return Group(Text(title, style="bold"), table, *([Text(notes, style="dim")] if notes else []), Text(""))


def _finite(value) -> bool:
    return value is not None and value == value and abs(value) != float("inf")


def _number(value, digits: int) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "—"


def _rho(value) -> str:
    return f"{value:.2f}" if _finite(value) else "—"
