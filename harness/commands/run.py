"""``dvbench run SPEC``: run a spec, showing its progress (stage, what, rate, time left); end
with the short screen of its leaderboards and where the whole tables are."""

from __future__ import annotations

from pathlib import Path

from dvbench.harness.commands import options
from dvbench.harness.commands.leaderboard import print_screen


def add(commands) -> None:
    run = commands.add_parser("run", help="run a spec and write scores and leaderboards")
    run.add_argument("spec", type=Path, help="the spec's YAML file")
    run.add_argument("--out", type=Path, help="output folder (default: the spec's output_dir, or runs/<name>)")
    options.add(run)


def main(args, console) -> int:
    from dvbench.harness.progress import clock, reporter
    from dvbench.harness.runner import Runner

    spec = options.load_spec(args, args.spec)
    progress = reporter()
    runner = Runner(spec, args.out, progress, log=progress.note)
    result = runner.run()
    print_screen(console, result.tables, level=spec.settings.leaderboard.level, seconds=result.seconds, out=result.out)
    timings = ", ".join(f"{stage} {clock(seconds)}" for stage, seconds in result.timings.items())
    console.print(f"wrote {result.out} in {clock(sum(result.timings.values()))} ({timings})", highlight=False)
    return 0
