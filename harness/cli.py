"""``dvbench run | check | plugins | leaderboard``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from dvbench.harness import __version__

EXIT_DRIFT = 1
EXIT_INPUT = 2
GOLDEN_ROWS = 30
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or container's stop), handled like Ctrl-C: finished work is kept."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dvbench", description="Benchmark training-data valuation methods.")
    parser.add_argument("--version", action="version", version=f"dvbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a spec and write scores and leaderboards")
    run.add_argument("spec", type=Path, help="the spec's YAML file")
    run.add_argument("--out", type=Path, help="output folder (default: the spec's output_dir, or runs/<name>)")
    check = commands.add_parser("check", help="validate a spec without loading any model; with --golden, "
                                              "score it and compare with a golden file")
    check.add_argument("spec", type=Path)
    check.add_argument("--golden", type=Path, help="golden scores (JSON): exit 1 with a table of what drifted")
    check.add_argument("--update", action="store_true", help="with --golden: write the golden file from this run")
    check.add_argument("--out", type=Path, help="with --golden: keep the run's artifacts here (default: a "
                                                "temporary folder)")
    commands.add_parser("plugins", help="list every registered plugin")
    board = commands.add_parser("leaderboard", help="print the leaderboards saved in a run folder and draw its plots again")
    board.add_argument("dir", type=Path, help="a run's output folder")
    args = parser.parse_args(argv)

    from rich.console import Console

    from dvbench.harness.errors import InputError, os_error_line
    from dvbench.harness.plugins import PluginError

    console = Console()
    errors = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args, console)
    except (InputError, PluginError) as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        return EXIT_INPUT
    except Terminated:
        errors.print("terminated (SIGTERM); finished artifacts are kept: run the same command again to resume")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        errors.print("interrupted; finished artifacts are kept: run the same command again to resume")
        return EXIT_INTERRUPTED
    except OSError as error:
        errors.print(f"[bold red]error:[/] {os_error_line(error)}", highlight=False, markup=True, soft_wrap=True)
        return EXIT_INPUT
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args, console) -> int:
    from dvbench.harness.leaderboard import summary
    from dvbench.harness.progress import RichProgress
    from dvbench.harness.report import summary_table
    from dvbench.harness.runner import Runner
    from dvbench.harness.spec import load_spec

    spec = load_spec(args.spec)
    runner = Runner(spec, args.out, RichProgress(), log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    result = runner.run()
    _print_tables(console, result.tables)
    console.print(summary_table(summary(result.tables, result.seconds), spec.settings.leaderboard.level))
    timings = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in result.timings.items())
    console.print(f"wrote {result.out} ({timings})", highlight=False)
    return 0


def _check(args, console) -> int:
    from dvbench.harness.errors import InputError
    from dvbench.harness.spec import load_spec

    spec = load_spec(args.spec)
    if args.golden is not None:
        return _golden(args, spec, console)
    if args.update or args.out:
        raise InputError("--update and --out go with --golden FILE")
    counts = ", ".join(f"{len(uses)} {role}(s)" for role, uses in (
        ("valuator", spec.valuators), ("selector", spec.selection), ("trainer", spec.training),
        ("evaluator", spec.evaluation)) if uses or role == "valuator")
    console.print(f"{args.spec}: ok — {spec.name}: {counts}", highlight=False)
    return 0


def _golden(args, spec, console) -> int:
    """Score every valuator of ``spec``; write the golden file (``--update``) or compare with it."""
    import tempfile

    from rich.table import Table

    from dvbench.harness import golden
    from dvbench.harness.progress import RichProgress
    from dvbench.harness.runner import Runner

    expected = None if args.update else golden.read(args.golden)  # a missing file fails before scoring
    with tempfile.TemporaryDirectory(prefix="dvbench-golden-") as scratch:
        runner = Runner(spec, args.out or Path(scratch), RichProgress(), log=lambda line: None)
        scores = runner.scores()
    if args.update:
        golden.write(args.golden, spec.name, scores)
        console.print(f"wrote {args.golden}: {len(scores)} valuator(s)", highlight=False)
        return 0
    drifts = golden.compare(expected, scores)
    if not drifts:
        console.print(f"{args.golden}: {len(scores)} valuator(s) within tolerance", highlight=False)
        return 0
    table = Table(title=f"{len(drifts)} score(s) drifted from {args.golden}")
    for column in ("valuator", "candidate", "expected", "got"):
        table.add_column(column, justify="left" if column in ("valuator", "candidate") else "right")
    for drift in drifts[:GOLDEN_ROWS]:
        table.add_row(drift.valuator, drift.candidate, *("missing" if v is None else "—" if v != v else repr(v)
                                                         for v in (drift.expected, drift.got)))
    console.print(table)
    if len(drifts) > GOLDEN_ROWS:
        console.print(f"... and {len(drifts) - GOLDEN_ROWS} more", highlight=False)
    console.print("if the change is intended, write the file again with --update", highlight=False)
    return EXIT_DRIFT


def _plugins(args, console) -> int:
    from rich.table import Table

    from dvbench.harness.plugins import load_registry

    table = Table(title="dvbench plugins")
    for column in ("role", "name", "version", "from"):
        table.add_column(column, no_wrap=True)
    table.add_column("config keys")  # the one that wraps on a narrow terminal
    for role, entries in load_registry().entries.items():
        for name, entry in sorted(entries.items()):
            table.add_row(role, name, entry.cls.version, entry.source, ", ".join(entry.cls.Config.model_fields))
    console.print(table)
    return 0


def _leaderboard(args, console) -> int:
    import json

    import polars as pl

    from dvbench.harness import plots
    from dvbench.harness.errors import InputError

    tables = {path.stem: pl.read_parquet(path) for path in sorted((args.dir / "leaderboard").glob("*.parquet"))}
    if not tables:
        raise InputError(f"{args.dir}: no leaderboard/*.parquet here; run `dvbench run SPEC --out {args.dir}` first")
    _print_tables(console, tables)
    run = args.dir / "run.json"
    scatter = json.loads(run.read_text(encoding="utf-8"))["spec"]["leaderboard"].get("scatter") if run.is_file() else None
    for path in plots.render(args.dir, scatter):
        console.print(f"drew {path}")
    return 0


def _print_tables(console, tables) -> None:
    from dvbench.harness.report import rich_table

    for name, frame in tables.items():
        console.print(rich_table(frame, name))


COMMANDS = {"run": _run, "check": _check, "plugins": _plugins, "leaderboard": _leaderboard}

if __name__ == "__main__":
    sys.exit(main())
