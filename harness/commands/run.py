"""``dvbench run SPEC``: run a spec; print the leaderboards and the ground-truth summary."""

from __future__ import annotations

from pathlib import Path

from dvbench.harness.commands import options
from dvbench.harness.commands.leaderboard import print_tables


def add(commands) -> None:
    run = commands.add_parser("run", help="run a spec and write scores and leaderboards")
    run.add_argument("spec", type=Path, help="the spec's YAML file")
    run.add_argument("--out", type=Path, help="output folder (default: the spec's output_dir, or runs/<name>)")
    options.add(run)


def main(args, console) -> int:
    from dvbench.harness.leaderboard import summary
    from dvbench.harness.progress import RichProgress
    from dvbench.harness.report import summary_table
    from dvbench.harness.runner import Runner

    spec = options.load_spec(args, args.spec)
    runner = Runner(spec, args.out, RichProgress(), log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    result = runner.run()
    print_tables(console, result.tables)
    console.print(summary_table(summary(result.tables, result.seconds), spec.settings.leaderboard.level))
    timings = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in result.timings.items())
    console.print(f"wrote {result.out} ({timings})", highlight=False)
    return 0
