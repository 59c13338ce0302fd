"""Docs are tested: every hook, spec key and built-in plugin option is documented."""

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from dvbench.harness import hookspecs
from dvbench.harness.plugins import get_plugin_manager, load_registry
from dvbench.harness.schema import SpecModel

ROOT = Path(__file__).parents[1]
BUILTINS = load_registry(get_plugin_manager(autoload=False))
SPECS_README = (ROOT / "specs" / "README.md").read_text()
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()


def _nested(annotation):
    options = (annotation, *getattr(annotation, "__args__", ()))
    return next((t for t in options if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        name = field.alias or name  # the YAML key (data.anchors.kmeans.from)
        keys.append(prefix + name)
        nested = _nested(field.annotation)
        if nested is not None:
            keys.extend(_keys(nested, f"{prefix}{name}."))
    return keys


@pytest.mark.parametrize("key", _keys(SpecModel))
def test_every_spec_key_is_documented(key):
    assert f"`{key}`" in SPECS_README, f"specs/README.md does not document `{key}`"


def _plugin_section(role: str, name: str, text: str = SPECS_README) -> str:
    match = re.search(rf"^#+ `{name}` \({role}\)\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert match, f"no heading '### `{name}` ({role})'"
    return match.group(1)


def _table(section: str) -> str:
    """The option table of a section: its lines from ``| key |`` to the last ``|`` line."""
    match = re.search(r"^\| key \|.*?(?=\n(?!\|)|\Z)", section, re.M | re.S)
    return match.group(0) if match else ""


@pytest.mark.parametrize("role, name", [(role, name) for role, entries in BUILTINS.entries.items()
                                        for name in entries])
def test_every_builtin_option_table_is_the_commands_output(role, name, dvbench):
    """specs/README.md's table under each built-in's heading is what ``dvbench plugins NAME
    --markdown`` prints for it (paste that to update it), and every option has help text."""
    fields = BUILTINS.get(role, name).Config.model_fields
    for key, field in fields.items():
        assert field.description, f"{name}.Config.{key} has no help text"
    result = dvbench("plugins", name, "--markdown")
    assert result.returncode == 0, result.stderr
    printed = _table(_plugin_section(role, name, result.stdout))
    assert printed.count("\n") == len(fields) + 1  # header, rule, one row per option
    assert _table(_plugin_section(role, name)) == printed, (
        f"specs/README.md's table for {role} {name!r} differs from `dvbench plugins {name} --markdown`")


OUTSIDE = re.compile(r"SPEC\.md|\.\./shared")
SHIPPED_TEXT = ["README.md", "CONTRIBUTING.md", "specs", "docs", "harness", "plugins"]


def _texts():
    for top in SHIPPED_TEXT:
        path = ROOT / top
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in
                                                          (".py", ".md", ".yaml")):
            yield file.relative_to(ROOT), file.read_text(encoding="utf-8")


def test_nothing_shipped_cites_a_file_outside_the_repository():
    cited = [f"{path}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}"
             for path, text in _texts() for m in OUTSIDE.finditer(text)]
    assert not cited, "cites a file outside the repository (write docs/definitions.md § <section>):\n" + \
        "\n".join(cited)


def test_every_citation_of_the_definitions_names_one_of_its_sections():
    definitions = (ROOT / "docs" / "definitions.md").read_text()
    sections = re.findall(r"^## (.+)$", definitions, re.M)
    slugs = {re.sub(r"[^\w\- ]", "", s.lower()).replace(" ", "-") for s in sections}
    found = 0
    for path, text in _texts():
        for match in re.finditer(r"definitions\.md\s+§\s+(.{1,60})", text, re.S):
            cited = " ".join(match.group(1).split())
            assert any(cited.startswith(s) for s in sections), f"{path}: § {cited[:40]}... is no section"
            found += 1
        for slug in re.findall(r"definitions\.md#([\w-]+)", text):
            assert slug in slugs, f"{path}: definitions.md#{slug} is no heading"
    assert found > 20


def _readme_specs():
    readme = (ROOT / "README.md").read_text()
    return [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if block.startswith("name:")]


def _spec_cases():
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    return ([pytest.param(p, id=p.name) for p in specs]
            + [pytest.param(block, id=f"README-{i}") for i, block in enumerate(_readme_specs())])


@pytest.mark.parametrize("spec", _spec_cases())
def test_every_spec_shipped_or_shown_passes_check_on_a_fresh_clone(spec, dvbench, tmp_path, monkeypatch):
    """In place, with nothing beside the repository (no ../shared data, no user files); an API key
    in the environment, as paper-full.yaml's judge asks (check calls no API)."""
    monkeypatch.setenv("OPENAI_API_KEY", "not-used-by-check")
    if isinstance(spec, str):
        (tmp_path / "readme.yaml").write_text(spec)
        spec = tmp_path / "readme.yaml"
    result = dvbench("check", spec)
    assert result.returncode == 0, result.stderr
    assert ": ok" in result.stdout


def test_the_readme_shows_a_spec():
    assert _readme_specs()


def test_contributing_shows_the_example_plugins_whole_pyproject():
    shown = re.search(r"```toml\n(.*?)```", CONTRIBUTING, re.S).group(1)
    assert shown == (ROOT / "tests" / "example_plugin" / "pyproject.toml").read_text()
    assert "[build-system]" in shown


@pytest.mark.parametrize("hook", [h for h in dir(hookspecs) if h.startswith("dvbench_")])
def test_every_hook_is_documented_with_its_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"{hook}({params})" in CONTRIBUTING


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests:\n\n```bash\n(.+)\n```", readme).group(1)
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == command
