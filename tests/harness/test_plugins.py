import subprocess
import sys

import pytest

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.plugins import DEFAULT_PLUGINS, PluginError, get_plugin_manager, load_registry
from dvbench.harness.roles import Selector, Valuator


def test_builtins_register_through_the_hooks():
    registry = load_registry(get_plugin_manager())
    assert set(registry.entries["valuator"]) == {"random", "file", "icp", "grad_ip", "grad_store", "ekfac", "one_step",
                                                  "bm25", "repsim"}
    assert set(registry.entries["selector"]) == {"top_k", "score_bins", "random"}
    assert all(e.source == "built-in" for role in registry.entries.values() for e in role.values())


def test_registering_the_builtins_imports_no_torch():
    """`dvbench check` and `dvbench plugins` stay quick: heavy imports wait for scoring (and a
    plugin's conftest loading dvbench's fixtures waits for a test that asks for the model)."""
    code = ("import sys; from dvbench.harness.plugins import get_plugin_manager, load_registry; "
            "load_registry(get_plugin_manager(autoload=False)); print('torch' in sys.modules); "
            "import dvbench.harness.testing; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


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


class Extra(Copycat):
    name = "extra"


class Extra2(Copycat):
    name = "extra2"


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


def _install_entry_point(root, module, source):
    """A distribution ``dvbench-<module>`` with one ``dvbench`` entry point, as pip would leave it."""
    (root / f"{module}.py").write_text(source)
    info = root / f"dvbench_{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: dvbench-{module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dvbench]\n{module} = {module}\n")


def test_misspelled_hook_is_refused(tmp_path, monkeypatch):
    _install_entry_point(tmp_path, "typo_plugin", (
        "from dvbench.harness.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def dvbench_register_valuator(register):  # missing the final s\n"
        "    pass\n"
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as error:
        get_plugin_manager(autoload=True)
    assert str(error.value) == (
        "typo_plugin (dvbench-typo_plugin 0.1) implements unknown hook dvbench_register_valuator "
        "(did you mean dvbench_register_valuators?); dvbench's hooks are dvbench_register_valuators, "
        "dvbench_register_selectors, dvbench_register_trainers, dvbench_register_evaluators"
    )


def test_hooks_are_called_one_plugin_at_a_time_by_keyword():
    calls = []
    pm = _manager_with(_Plugin(Extra), _Plugin(Extra2))
    pm.add_hookcall_monitoring(lambda hook, impls, kwargs: calls.append((hook, impls, kwargs)), lambda *a: None)
    registry = load_registry(pm)
    assert {"extra", "extra2"} <= set(registry.entries["valuator"])
    valuator_calls = [(impls, kwargs) for hook, impls, kwargs in calls if hook == "dvbench_register_valuators"]
    assert [impl.plugin_name for impls, _ in valuator_calls for impl in impls] == \
        [*(m for m in DEFAULT_PLUGINS if ".valuators." in m), "third_party_0", "third_party_1"]
    assert all(len(impls) == 1 and list(kwargs) == ["register"] for impls, kwargs in valuator_calls)


def test_a_wrapper_hook_runs_as_pluggy_runs_it():
    class Wrapping:
        @hookimpl(wrapper=True)
        def dvbench_register_valuators(self, register):
            register(Extra)
            return (yield)

    assert load_registry(_manager_with(Wrapping())).entries["valuator"]["extra"].source == "third_party_0"


def test_derived_keys_must_be_config_fields():
    class Typo(Extra):
        name = "typo"
        derived = ("aggregate", "agregate")

        class Config(Config):
            aggregate: str = "mean"

    with pytest.raises(PluginError) as error:
        load_registry(_manager_with(_Plugin(Typo)))
    assert str(error.value) == ("third_party_0 (third_party_0): test_derived_keys_must_be_config_fields.<locals>.Typo"
                                ".derived names 'agregate', which is not a field of "
                                "test_derived_keys_must_be_config_fields.<locals>.Typo.Config (its fields: aggregate)")


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
