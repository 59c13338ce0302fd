"""Every test gets built-in plugins only, unless it asks for entry points itself, and the
fixtures dvbench offers plugin authors (``tiny_model_dir``, ``tiny_model``, ``tiny_valuation_task``)."""

import pytest

from dvbench.harness.plugins import DISABLE_AUTOLOAD

pytest_plugins = ["dvbench.harness.testing"]


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="write tests/golden/builtins.json from this run (after an intended scorer change)")


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD, "1")
