"""``dvbench leaderboard DIR``: a run's saved leaderboards, as the short screen the run ended
with or one whole table (``--table NAME``, as markdown, CSV or JSON), and its plots drawn again."""

from __future__ import annotations

from pathlib import Path

FORMATS = ("md", "csv", "json")


def add(commands) -> None:
    board = commands.add_parser("leaderboard", help="print the leaderboards saved in a run folder and draw its plots again")
    board.add_argument("dir", type=Path, help="a run's output folder")
    board.add_argument("--table", metavar="NAME", help="print this whole table (a file name in DIR/leaderboard/) "
                                                       "instead of the short screen")
    board.add_argument("--format", choices=FORMATS, help="with --table: md (default), csv or json")


def main(args, console) -> int:
    import json

    import polars as pl

    from dvbench.harness import plots
    from dvbench.harness.errors import InputError

    tables = {path.stem: pl.read_parquet(path) for path in sorted((args.dir / "leaderboard").glob("*.parquet"))}
    if not tables:
        raise InputError(f"{args.dir}: no leaderboard/*.parquet here; run `dvbench run SPEC --out {args.dir}` first")
    if args.format and not args.table:
        raise InputError("--format goes with --table NAME: the short screen has one format")
    if args.table:
        if args.table not in tables:
            raise InputError(f"{args.dir}/leaderboard has no table {args.table!r}; choose one of {', '.join(tables)}")
        console.out(whole(tables[args.table], args.format or "md"), end="", highlight=False)
        return 0
    run = args.dir / "run.json"
    record = json.loads(run.read_text(encoding="utf-8")) if run.is_file() else {}
    options = record.get("spec", {}).get("leaderboard", {})
    print_screen(console, tables, level=options.get("level", 0.95), seconds=record.get("valuator_seconds"),
                 out=args.dir)
    for path in plots.render(args.dir, options.get("scatter")):
        console.print(f"drew {path}", highlight=False)
    return 0


def whole(frame, format: str) -> str:
    """``frame`` in full as markdown, CSV or JSON (one object per row)."""
    import json

    from dvbench.harness.report import markdown

    if format == "md":
        return markdown(frame)
    if format == "csv":
        return frame.write_csv()
    return json.dumps(frame.to_dicts(), indent=1) + "\n"


def print_screen(console, tables, *, level, seconds, out) -> None:
    """The short screen (:mod:`dvbench.harness.screen`), 100 columns wide in a file (a terminal
    keeps its own width)."""
    from dvbench.harness.screen import WIDTH, render

    if not console.is_terminal:
        console.width = max(console.width, WIDTH)

    for part in render(tables, level=level, seconds=seconds, out=out):
        console.print(part, highlight=False)
