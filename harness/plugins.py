"""Builds the plugin manager and the registry of every role's plugins.

Built-ins are plain modules listed in :data:`DEFAULT_PLUGINS`; third-party plugins are entry
points of group ``dvbench``. Set ``DVBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` to load built-ins only.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field

import pluggy

from dvbench.harness import hookspecs
from dvbench.harness.config import Config
from dvbench.harness.roles import ROLES, Plugin, Valuator

DEFAULT_PLUGINS = (
    "dvbench.plugins.valuators.random",
    "dvbench.plugins.valuators.file",
    "dvbench.plugins.valuators.icp",
    "dvbench.plugins.valuators.grad_ip",
    "dvbench.plugins.valuators.grad_store",
    "dvbench.plugins.valuators.ekfac",
    "dvbench.plugins.valuators.one_step",
    "dvbench.plugins.valuators.bm25",
    "dvbench.plugins.valuators.repsim",
    "dvbench.plugins.trainers.full_finetune",
    "dvbench.plugins.evaluators.loss",
    "dvbench.plugins.evaluators.win_rate",
    "dvbench.plugins.selectors.top_k",
    "dvbench.plugins.selectors.score_bins",
    "dvbench.plugins.selectors.random",
)
ENTRY_POINT_GROUP = "dvbench"
DISABLE_AUTOLOAD = "DVBENCH_DISABLE_PLUGIN_AUTOLOAD"

_HOOKS = {
    "valuator": "dvbench_register_valuators",
    "selector": "dvbench_register_selectors",
    "trainer": "dvbench_register_trainers",
    "evaluator": "dvbench_register_evaluators",
}


class PluginError(Exception):
    """A plugin broke the contract: a duplicate name, a wrong type, a bad class attribute."""


def get_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """A fresh manager with the built-ins and, unless disabled, every ``dvbench`` entry point."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD)
    if autoload:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as error:
            raise PluginError(
                f"a '{ENTRY_POINT_GROUP}' entry point failed to load ({type(error).__name__}: {error}); "
                f"fix or uninstall that plugin, or set {DISABLE_AUTOLOAD}=1 to load built-ins only"
            ) from error
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        unknown = ", ".join(c.name for c in pm.get_hookcallers(error.plugin) or () if not c.has_spec())
        guess = difflib.get_close_matches(unknown, _HOOKS.values(), n=1)
        raise PluginError(
            f"{pm.get_name(error.plugin)} ({_sources(pm)[error.plugin]}) implements unknown hook {unknown}"
            + (f" (did you mean {guess[0]}?)" if guess else "")
            + f"; dvbench's hooks are {', '.join(_HOOKS.values())}"
        ) from None
    return pm


def _sources(pm: pluggy.PluginManager) -> dict[object, str]:
    """Where each plugin comes from: its distribution, else ``built-in`` or its registered name."""
    dists = {plugin: f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    return {plugin: dists.get(plugin, "built-in" if name in DEFAULT_PLUGINS else name)
            for name, plugin in pm.list_name_plugin()}


@dataclass(frozen=True)
class Entry:
    """A registered plugin class and where it came from."""

    cls: type[Plugin]
    source: str


@dataclass
class Registry:
    """Every registered plugin class, by role and name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {r: {} for r in ROLES})

    def get(self, role: str, name: str) -> type[Plugin]:
        try:
            return self.entries[role][name].cls
        except KeyError:
            raise KeyError(f"unknown {role} {name!r}; available: {self.available(role)}") from None

    def available(self, role: str) -> str:
        return ", ".join(sorted(self.entries[role])) or "(none registered)"


def load_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every register hook of every plugin; refuse duplicates and wrong types.

    Each plugin's hook is called on its own (a subset hook caller holding only that plugin), by
    keyword, so that ``register`` and every error know which plugin is registering.
    """
    pm = pm or get_plugin_manager()
    sources = _sources(pm)
    registry = Registry()
    for role, hook_name in _HOOKS.items():
        plugins = [impl.plugin for impl in getattr(pm.hook, hook_name).get_hookimpls()]
        for plugin in dict.fromkeys(plugins):
            source = sources[plugin]
            origin = f"{pm.get_name(plugin)} ({source})"

            def register(cls, role=role, origin=origin, source=source):
                check_plugin_class(cls, role, origin)
                taken = registry.entries[role].get(cls.name)
                if taken is not None:
                    raise PluginError(
                        f"{role} name {cls.name!r} registered twice: by {taken.source} "
                        f"({taken.cls.__module__}.{taken.cls.__qualname__}) and by {origin} "
                        f"({cls.__module__}.{cls.__qualname__})"
                    )
                registry.entries[role][cls.name] = Entry(cls, source)

            others = [p for p in plugins if p is not plugin]
            try:
                pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
            except PluginError:
                raise
            except Exception as error:
                raise PluginError(f"{origin} failed in {hook_name}: {type(error).__name__}: {error}") from error
    return registry


def check_plugin_class(cls: object, role: str, origin: str) -> None:
    """Refuse a class that cannot fill ``role``; ``origin`` names the plugin in the error."""
    base = ROLES[role]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{origin} registered {cls!r} as a {role}, but it is not a {base.__name__} subclass")
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum()):
        raise PluginError(f"{origin}: {cls.__qualname__}.name must be a word such as 'my_valuator', not {name!r}")
    if not isinstance(cls.version, str):
        raise PluginError(f"{origin}: {cls.__qualname__}.version must be a string")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, Config)):
        raise PluginError(f"{origin}: {cls.__qualname__}.Config must subclass dvbench.harness.config.Config")
    if issubclass(cls, Valuator):
        fields = cls.Config.model_fields
        for key in cls.derived:
            if key not in fields:
                raise PluginError(
                    f"{origin}: {cls.__qualname__}.derived names {key!r}, which is not a field of "
                    f"{cls.Config.__qualname__} (its fields: {', '.join(fields) or 'none'})"
                )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise PluginError(f"{origin}: {cls.__qualname__} does not implement {missing}")
