"""The whole plugin contract: one register hook per role.

A plugin module implements any of these with ``@dvbench.harness.hookspecs.hookimpl``; the
harness passes ``register`` and owns names, collisions and type checks.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("dvbench")
hookimpl = pluggy.HookimplMarker("dvbench")


@hookspec
def dvbench_register_valuators(register: Callable[[type], None]) -> None:
    """Call ``register(cls)`` once for each Valuator subclass this plugin provides.

    :param register: takes a :class:`~dvbench.harness.roles.Valuator` subclass.
    """


@hookspec
def dvbench_register_selectors(register: Callable[[type], None]) -> None:
    """Call ``register(cls)`` once for each Selector subclass this plugin provides.

    :param register: takes a :class:`~dvbench.harness.roles.Selector` subclass.
    """


@hookspec
def dvbench_register_trainers(register: Callable[[type], None]) -> None:
    """Call ``register(cls)`` once for each Trainer subclass this plugin provides.

    :param register: takes a :class:`~dvbench.harness.roles.Trainer` subclass.
    """


@hookspec
def dvbench_register_evaluators(register: Callable[[type], None]) -> None:
    """Call ``register(cls)`` once for each Evaluator subclass this plugin provides.

    :param register: takes a :class:`~dvbench.harness.roles.Evaluator` subclass.
    """
