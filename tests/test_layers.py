"""The import layers: the bottom modules import nothing above them, and no module-level import
of dvbench's own modules forms a cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"harness": "dvbench.harness", "plugins": "dvbench.plugins"}
# The bottom of the house: each may import only the modules listed.
BOTTOM = {
    "dvbench.harness.errors": set(),
    "dvbench.harness.network": set(),
    "dvbench.harness.progress": set(),
    "dvbench.harness.paths": {"dvbench.harness.errors"},
    "dvbench.harness.executor": {"dvbench.harness.paths"},
    "dvbench.harness.template": set(),
    "dvbench.harness.records": {"dvbench.harness.template", "dvbench.harness.progress", "dvbench.harness.executor"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join((PACKAGES[parts[0]], *parts[1:]))
    return name.removesuffix(".__init__")


def _imports(path: Path, everywhere: bool) -> set[str]:
    """dvbench modules ``path`` imports: at module level (``everywhere``: in functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree) if everywhere else tree.body:
        if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dvbench."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dvbench.")}
    return found


def _sources() -> dict[str, Path]:
    return {_module(path): path for top in PACKAGES for path in sorted((ROOT / top).rglob("*.py"))}


def test_the_bottom_modules_import_nothing_above_them():
    sources = _sources()
    for module, allowed in BOTTOM.items():
        extra = _imports(sources[module], everywhere=True) - allowed
        assert not extra, f"{module} imports {sorted(extra)}"


def test_module_level_imports_form_no_cycle():
    sources = _sources()
    graph = {m: {i for i in _imports(p, everywhere=False) if i in sources} for m, p in sources.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == 2:
            return
        assert state.get(module) != 1, " -> ".join(trail[trail.index(module):] + [module])
        state[module] = 1
        for child in sorted(graph[module]):
            visit(child, trail + [module])
        state[module] = 2

    for module in sorted(graph):
        visit(module, [])
