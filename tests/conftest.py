"""Every test gets built-in plugins only, unless it asks for entry points itself."""

import pytest

from dvbench.harness.plugins import DISABLE_AUTOLOAD


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="write tests/golden/builtins.json from this run (after an intended scorer change)")


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD, "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder holding :func:`~dvbench.harness.testing.tiny_lm` (float32) and its tokenizer:
    the model of every spec a test runs, in place of the embedded one."""
    from dvbench.harness.testing import tiny_lm

    folder = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny_lm("float32")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
