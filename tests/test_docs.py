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


@pytest.mark.parametrize("hook", [h for h in dir(hookspecs) if h.startswith("dvbench_")])
def test_every_hook_is_documented_with_its_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"{hook}({params})" in CONTRIBUTING


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests:\n\n```bash\n(.+)\n```", readme).group(1)
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == command
