"""``dvbench plugins``: every registered plugin."""

from __future__ import annotations


def add(commands) -> None:
    commands.add_parser("plugins", help="list every registered plugin")


def main(args, console) -> int:
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
