"""The example plugin distribution in tests/example_plugin, installed with real entry-point metadata."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dvbench.harness.plugins import DISABLE_AUTOLOAD, load_registry

EXAMPLE = Path(__file__).parent / "example_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    source, target = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("site")
    shutil.copytree(EXAMPLE, source, dirs_exist_ok=True)  # the build leaves files beside its source
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    assert list(target.glob("dvbench_length-0.2.0.dist-info/entry_points.txt"))
    return target


def test_entry_point_registers_in_process(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(DISABLE_AUTOLOAD)
    entry = load_registry().entries["valuator"]["length"]
    assert entry.source == "dvbench-length 0.2.0"


def test_plugins_command_lists_it_unless_autoload_is_off(site, dvbench, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(DISABLE_AUTOLOAD)
    listed = dvbench("plugins")
    assert listed.returncode == 0, listed.stderr
    assert "length" in listed.stdout and "dvbench-length 0.2.0" in listed.stdout
    assert "built-in" in listed.stdout
    monkeypatch.setenv(DISABLE_AUTOLOAD, "1")
    quiet = dvbench("plugins")
    assert "length" not in quiet.stdout and "random" in quiet.stdout


def test_runs_in_a_spec(site, tmp_path, tiny_model_dir, dvbench, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(DISABLE_AUTOLOAD)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: lengths\n"
        f"model: {{name: {tiny_model_dir}}}\n"
        "data: {generated: {candidates: 40, anchors: 2, eval: 0}}\n"
        "valuators:\n"
        "  long: {use: length}\n"
        "  short: {use: length, shorter_is_better: true}\n"
    )
    result = dvbench("run", spec, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    long = pl.read_parquet(tmp_path / "out/scores/long.parquet")
    short = pl.read_parquet(tmp_path / "out/scores/short.parquet")
    assert (long["score"] == -short["score"]).all() and long["score"].min() > 0
    rho = pl.read_parquet(tmp_path / "out/leaderboard/spearman.parquet")["rho"].item()
    assert rho == pytest.approx(-1.0)
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert record["plugins"]["valuators.long"]["distribution"] == {"name": "dvbench-length", "version": "0.2.0"}
    assert record["plugins"]["valuators.long"]["class"] == "dvbench_length.LengthValuator"
    assert record["versions"]["dvbench-length"] == "0.2.0"
