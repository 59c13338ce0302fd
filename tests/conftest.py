"""Every test gets built-in plugins only, unless it asks for entry points itself."""

import pytest

from dvbench.harness.plugins import DISABLE_AUTOLOAD


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD, "1")
