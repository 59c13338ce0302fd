"""``dvbench plugins [NAME] [--markdown]``: every registered plugin (or those named NAME, in any
role), its version, where it comes from, and each option's type, default and help."""

from __future__ import annotations

from dvbench.harness.errors import InputError


def add(commands) -> None:
    plugins = commands.add_parser("plugins", help="list every registered plugin and its options")
    plugins.add_argument("name", nargs="?", help="only the plugins of this name (in any role)")
    plugins.add_argument("--markdown", action="store_true",
                         help="print markdown: a heading and an option table per plugin (specs/README.md's)")


def main(args, console) -> int:
    from dvbench.harness.plugins import load_registry

    registry = load_registry()
    chosen = [(role, name, entry) for role, entries in registry.entries.items()
              for name, entry in sorted(entries.items()) if args.name in (None, name)]
    if not chosen:
        known = sorted({name for entries in registry.entries.values() for name in entries})
        raise InputError(f"no plugin named {args.name!r}; registered: {', '.join(known)}")
    for role, name, entry in chosen:
        if args.markdown:
            console.out(markdown(role, name, entry.cls.Config), highlight=False)
        else:
            console.print(table(role, name, entry))
    return 0


def markdown(role: str, name: str, config) -> str:
    """The heading and option table specs/README.md shows for a plugin."""
    from dvbench.harness.options import markdown_table

    body = markdown_table(config) if config.model_fields else "No options."
    return f"### `{name}` ({role})\n\n{body}\n"


def table(role: str, name: str, entry):
    """A rich table of one plugin's options, titled with its role, version and origin."""
    from rich.table import Table
    from rich.text import Text

    from dvbench.harness.options import options

    title = Text(f"{name} ({role}) {entry.cls.version}, {entry.source}", style="bold")
    rows = options(entry.cls.Config)
    out = Table(title=title, title_justify="left", show_header=bool(rows))
    for column in ("key", "type", "default"):
        out.add_column(column, no_wrap=column != "type")
    out.add_column("meaning")  # the one that wraps on a narrow terminal
    for o in rows:
        out.add_row(*(Text(cell) for cell in (o.key, o.type, o.default.strip("`"), o.help)))
    if not rows:
        out.add_row("(no options)", "", "", "")
    return out
