"""``dvbench check SPEC...``: validate specs without loading a model, as far as a run's first
seconds would (every data row, the model's name, the plugins' own checks such as a judge's API
key); with ``--golden``, score one spec and compare with a golden file."""

from __future__ import annotations

from pathlib import Path

from dvbench.harness.commands import options
from dvbench.harness.errors import InputError

EXIT_DRIFT = 1
GOLDEN_ROWS = 30


def add(commands) -> None:
    check = commands.add_parser("check", help="validate specs without loading any model: keys, every data row, "
                                              "the model's name, API keys; with --golden, score a spec and "
                                              "compare with a golden file")
    check.add_argument("spec", type=Path, nargs="+", help="spec YAML files; each is reported ok or with its errors")
    options.add(check)
    check.add_argument("--golden", type=Path, help="golden scores (JSON): exit 1 with a table of what drifted")
    check.add_argument("--update", action="store_true", help="with --golden: write the golden file from this run")
    check.add_argument("--out", type=Path, help="with --golden: keep the run's artifacts here (default: a "
                                                "temporary folder)")


def main(args, console) -> int:
    if args.golden is not None:
        if len(args.spec) > 1:
            raise InputError(f"--golden compares one spec's scores; give one spec, not {len(args.spec)}")
        return golden(args, options.load_spec(args, args.spec[0]), console)
    if args.update or args.out:
        raise InputError("--update and --out go with --golden FILE")
    from rich.console import Console

    from dvbench.harness.cli import EXIT_INPUT, print_error

    errors, failed = Console(stderr=True), 0
    for path in args.spec:
        try:
            spec = options.load_spec(args, path)
            found = problems(spec, log=lambda line: console.print(line, highlight=False, soft_wrap=True))
        except InputError as error:
            found = [str(error)]
        if found:
            failed += 1
            print_error(errors, _report(path, found))
        else:
            _ok(console, path, spec)
    if len(args.spec) > 1:
        console.print(f"{len(args.spec) - failed} of {len(args.spec)} specs ok", highlight=False, soft_wrap=True)
    return EXIT_INPUT if failed else 0


def problems(spec, log) -> list[str]:
    """What a run of ``spec`` would reject in its first seconds, or once a plugin starts: bad data
    rows (every one, file and line), a model that does not resolve or a GPU torch does not see
    (when a role needs a model or anchors are built by K-Means), and each plugin's own
    :meth:`~dvbench.harness.roles.Plugin.check`. Loads no model and downloads nothing (a hub
    dataset not cached is validated as a key only)."""
    from dvbench.harness.stages.anchors import built_anchors
    from dvbench.harness.stages.data import load_data
    from dvbench.harness.stages.model import needed

    found = []
    if spec.settings.execution.backend == "ray":  # the package only: no Ray starts
        from dvbench.harness.ray_executor import require_ray

        try:
            require_ray()
        except InputError as error:
            found.append(str(error))
    try:
        load_data(spec, log, download=False)
    except InputError as error:
        found.append(str(error))
    if needed(spec) or built_anchors(spec) is not None:
        from dvbench.harness.lm.models import locate

        try:
            locate(spec.settings.model.ref())
        except InputError as error:
            found.append(str(error))
        if spec.settings.model.device != "auto":  # auto always resolves: no torch import for it
            from dvbench.harness.lm.devices import resolve_device

            try:
                resolve_device(spec.settings.model.device)
            except InputError as error:
                found.append(str(error))
    for section, uses in spec.sections().items():
        for use in uses.values():
            try:
                use.plugin.check()
            except InputError as error:
                found.append(f"{section}.{use.label}: {error}")
    return found


def _report(path: Path, found: list[str]) -> str:
    """A spec's problems: one on one line, several under a count, each line indented."""
    if len(found) == 1:
        return found[0] if found[0].startswith(str(path)) else f"{path}: {found[0]}"
    return "\n".join([f"{path}: {len(found)} problems", *(f"  {line}" for p in found for line in p.splitlines())])


def _ok(console, path: Path, spec) -> None:
    counts = ", ".join(f"{len(uses)} {role}(s)" for role, uses in (
        ("valuator", spec.valuators), ("selector", spec.selection), ("trainer", spec.training),
        ("evaluator", spec.evaluation)) if uses or role == "valuator")
    console.print(f"{path}: ok — {spec.name}: {counts}", highlight=False, soft_wrap=True)


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
