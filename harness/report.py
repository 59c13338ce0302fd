"""Rendering only: leaderboard frames as rich tables and markdown."""

from __future__ import annotations

import polars as pl


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


def markdown(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured markdown table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows]) + "\n"


def rich_table(frame: pl.DataFrame, title: str):
    """A rich Table of the frame, numbers right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for name, dtype in frame.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


def _with_interval(value, low, high, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + ("" if low is None or high is None else f" [{low:.{digits}f}, {high:.{digits}f}]")


def summary_table(frame: pl.DataFrame, level: float):
    """The headline numbers per valuator (:func:`~dvbench.harness.leaderboard.summary`), each with
    its direction and interval, as a rich Table."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"ground truth per valuator: ↑ higher is better, [{level:.0%} interval]",
                  caption="removal: nats; MRR: planted facts; AUC, AUPRC: defects; * global LDS (no per-anchor matrix)",
                  box=box.SIMPLE_HEAD)
    for column in ("valuator", "LDS ↑", "removal ↑", "MRR ↑", "AUC ↑", "AUPRC ↑", "s"):
        table.add_column(column, justify="left" if column == "valuator" else "right",
                         no_wrap=column in ("LDS ↑", "removal ↑"))
    for row in frame.iter_rows(named=True):
        kind = "" if row["lds_kind"] in (None, "per_anchor") else "*"
        table.add_row(row["valuator"], _with_interval(row["lds"], row["lds_low"], row["lds_high"], 2) + kind,
                      _with_interval(row["removal"], row["removal_low"], row["removal_high"], 3),
                      *(_with_interval(row[k], None, None, 2) for k in ("fact_mrr", "auc", "auprc")),
                      f"{row['seconds']:.1f}")
    return table
