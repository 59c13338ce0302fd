import subprocess
import sys

import pytest

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.plugins import DEFAULT_PLUGINS, PluginError, get_plugin_manager, load_registry
from dvbench.harness.roles import Selector, Valuator


def test_builtins_register_through_the_hooks():
    registry = load_registry(get_plugin_manager())
    assert set(registry.entries["valuator"]) == {"random", "file", "icp", "grad_ip", "ekfac", "one_step"}
    assert set(registry.entries["selector"]) == {"top_k", "score_bins", "random"}
    assert all(e.source == "built-in" for role in registry.entries.values() for e in role.values())


def test_registering_the_builtins_imports_no_torch():
    """`dvbench check` and `dvbench plugins` stay quick: heavy imports wait for scoring."""
    code = ("import sys; from dvbench.harness.plugins import get_plugin_manager, load_registry; "
            "load_registry(get_plugin_manager(autoload=False)); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_each_default_plugin_module_implements_a_hook():
    pm = get_plugin_manager()
    for name in DEFAULT_PLUGINS:
        assert pm.get_hookcallers(pm.get_plugin(name)), name


def _manager_with(*plugins):
    pm = get_plugin_manager(autoload=False)
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=f"third_party_{index}")
    return pm


class _Plugin:
    def __init__(self, cls, hook="dvbench_register_valuators"):
        setattr(self, hook, hookimpl(specname=hook)(lambda register: register(cls)))


class Copycat(Valuator):
    name = "random"

    def score(self, task):
        return self.scores(task, [0.0] * len(task.candidates))


def test_duplicate_name_names_both_plugins():
    with pytest.raises(PluginError) as error:
        load_registry(_manager_with(_Plugin(Copycat)))
    message = str(error.value)
    assert "'random' registered twice" in message
    assert "built-in" in message and "RandomValuator" in message
    assert "third_party_0" in message and "Copycat" in message


def test_wrong_role_is_refused():
    class NotAValuator(Selector):
        name = "sneaky"

        def select(self, scores, *, reference, seed):
            raise NotImplementedError

    with pytest.raises(PluginError, match="third_party_0.*not a Valuator subclass"):
        load_registry(_manager_with(_Plugin(NotAValuator)))


def test_unimplemented_method_is_refused():
    class Lazy(Valuator):
        name = "lazy"

    with pytest.raises(PluginError, match="does not implement score"):
        load_registry(_manager_with(_Plugin(Lazy)))


@pytest.mark.parametrize("attribute, value, match", [
    ("name", "has space", "must be a word"),
    ("version", 3, "version must be a string"),
    ("Config", dict, "Config must subclass"),
])
def test_bad_class_attributes_are_refused(attribute, value, match):
    cls = type("Broken", (Copycat,), {"name": "broken", attribute: value})
    with pytest.raises(PluginError, match=match):
        load_registry(_manager_with(_Plugin(cls)))


def test_misspelled_hook_is_refused():
    class Typo:
        @hookimpl
        def dvbench_register_valuator(self, register):  # missing the final s
            pass

    pm = get_plugin_manager(autoload=False)
    pm.register(Typo())
    with pytest.raises(Exception, match="unknown hook"):
        pm.check_pending()


def test_config_must_match_its_class():
    from dvbench.plugins.valuators.random import RandomValuator

    class Other(Config):
        pass

    with pytest.raises(TypeError, match="takes a"):
        RandomValuator(Other())


def test_a_failing_hook_names_its_plugin():
    class Broken:
        @hookimpl
        def dvbench_register_selectors(self, register):
            raise ImportError("no module named 'faiss'")

    with pytest.raises(PluginError, match="third_party_0 .* failed in dvbench_register_selectors: ImportError"):
        load_registry(_manager_with(Broken()))


def test_a_broken_entry_point_says_how_to_run_without_it(tmp_path, monkeypatch):
    info = tmp_path / "dvbench_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dvbench-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dvbench]\nbroken = dvbench_missing_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="failed to load .*ModuleNotFoundError.*DVBENCH_DISABLE_PLUGIN_AUTOLOAD=1"):
        get_plugin_manager(autoload=True)
