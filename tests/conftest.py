"""Every test gets built-in plugins only, unless it asks for entry points itself, and the
fixtures dvbench offers plugin authors (``tiny_model_dir``, ``tiny_model``, ``tiny_valuation_task``)."""

import subprocess

import pytest

from dvbench.harness.plugins import DISABLE_AUTOLOAD

pytest_plugins = ["dvbench.harness.testing"]


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="write tests/golden/builtins.json from this run (after an intended scorer change)")


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD, "1")


@pytest.fixture
def dvbench(capsys):
    """``dvbench ARGS`` run in this process (``dvbench.harness.cli.main``): its exit code, stdout
    and stderr as a ``CompletedProcess``. Tests start a real process only where the boundary is
    the point (kill and resume, packaging, the console script)."""
    from dvbench.harness.cli import main

    def call(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call
