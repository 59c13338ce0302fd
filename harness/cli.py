"""``dvbench run | check | plugins | leaderboard``."""

from __future__ import annotations

import argparse
import signal
import sys

from dvbench.harness import __version__
from dvbench.harness.commands import check, leaderboard, plugins, run

COMMANDS = {"run": run, "check": check, "plugins": plugins, "leaderboard": leaderboard}

EXIT_INPUT = 2
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
    for command in COMMANDS.values():
        command.add(commands)
    args = parser.parse_args(argv)

    from rich.console import Console

    from dvbench.harness.errors import InputError, os_error_line
    from dvbench.harness.plugins import PluginError

    console = Console()
    errors = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command].main(args, console)
    except (InputError, PluginError) as error:
        print_error(errors, error)
        return EXIT_INPUT
    except Terminated:
        errors.print("terminated (SIGTERM); finished artifacts are kept: run the same command again to resume")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        errors.print("interrupted; finished artifacts are kept: run the same command again to resume")
        return EXIT_INTERRUPTED
    except OSError as error:
        print_error(errors, os_error_line(error))
        return EXIT_INPUT
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_error(console, error) -> None:
    """``error: <message>``, the message taken literally (a ``[...]`` in it is not markup)."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, markup=True, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
