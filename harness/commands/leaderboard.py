"""``dvbench leaderboard DIR``: print a run's saved leaderboards and draw its plots again."""

from __future__ import annotations

from pathlib import Path


def add(commands) -> None:
    board = commands.add_parser("leaderboard", help="print the leaderboards saved in a run folder and draw its plots again")
    board.add_argument("dir", type=Path, help="a run's output folder")


def main(args, console) -> int:
    import json

    import polars as pl

    from dvbench.harness import plots
    from dvbench.harness.errors import InputError

    tables = {path.stem: pl.read_parquet(path) for path in sorted((args.dir / "leaderboard").glob("*.parquet"))}
    if not tables:
        raise InputError(f"{args.dir}: no leaderboard/*.parquet here; run `dvbench run SPEC --out {args.dir}` first")
    print_tables(console, tables)
    run = args.dir / "run.json"
    scatter = json.loads(run.read_text(encoding="utf-8"))["spec"]["leaderboard"].get("scatter") if run.is_file() else None
    for path in plots.render(args.dir, scatter):
        console.print(f"drew {path}")
    return 0


def print_tables(console, tables) -> None:
    from dvbench.harness.report import rich_table

    for name, frame in tables.items():
        console.print(rich_table(frame, name))
