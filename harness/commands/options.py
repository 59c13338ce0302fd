"""The options ``run`` and ``check`` share: ``--set a.b.c=VALUE`` and ``--limit N``."""

from __future__ import annotations

from pathlib import Path


def add(parser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec key, VALUE in YAML (repeatable): --set seed=3, "
                             "--set valuators.icp.batch_size=4, --set 'ground_truth.removal=[0.1, 0.2]'")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="keep N candidates of the pool, drawn by the spec's seed, in their order")


def load_spec(args, path: Path):
    """The spec at ``path`` with the command line's ``--set`` and ``--limit``."""
    from dvbench.harness.spec import load_spec

    return load_spec(path, overrides=args.overrides, limit=args.limit)
