"""``dvbench check SPEC``: validate a spec without loading a model; with ``--golden``, score it and
compare with a golden file."""

from __future__ import annotations

from pathlib import Path

from dvbench.harness.errors import InputError

EXIT_DRIFT = 1
GOLDEN_ROWS = 30


def add(commands) -> None:
    check = commands.add_parser("check", help="validate a spec without loading any model; with --golden, "
                                              "score it and compare with a golden file")
    check.add_argument("spec", type=Path)
    check.add_argument("--golden", type=Path, help="golden scores (JSON): exit 1 with a table of what drifted")
    check.add_argument("--update", action="store_true", help="with --golden: write the golden file from this run")
    check.add_argument("--out", type=Path, help="with --golden: keep the run's artifacts here (default: a "
                                                "temporary folder)")


def main(args, console) -> int:
    from dvbench.harness.spec import load_spec

    spec = load_spec(args.spec)
    if args.golden is not None:
        return golden(args, spec, console)
    if args.update or args.out:
        raise InputError("--update and --out go with --golden FILE")
    counts = ", ".join(f"{len(uses)} {role}(s)" for role, uses in (
        ("valuator", spec.valuators), ("selector", spec.selection), ("trainer", spec.training),
        ("evaluator", spec.evaluation)) if uses or role == "valuator")
    console.print(f"{args.spec}: ok — {spec.name}: {counts}", highlight=False)
    return 0


def golden(args, spec, console) -> int:
    """Score every valuator of ``spec``; write the golden file (``--update``) or compare with it."""
    import tempfile

    from rich.table import Table

    from dvbench.harness import golden
    from dvbench.harness.progress import reporter
    from dvbench.harness.runner import Runner

    expected = None if args.update else golden.read(args.golden)  # a missing file fails before scoring
    with tempfile.TemporaryDirectory(prefix="dvbench-golden-") as scratch:
        runner = Runner(spec, args.out or Path(scratch), reporter(), log=lambda line: None)
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
