"""Killing `dvbench run` mid-scoring (SIGKILL), stopping it (SIGTERM, as a scheduler or a
container stop does) or interrupting it (Ctrl-C) loses nothing: the rerun resumes from the
finished shards and ends bit for bit where an uninterrupted run does.

The interrupted run is a real process (killing it is the point); the rerun, which has only the
folder to go on, and the uninterrupted reference run in this one. Three shards of 64 candidates:
the kill lands after the first."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from dvbench.harness.artifacts import read_npz
from dvbench.harness.cli import main


def _spec(folder: Path, model: Path) -> Path:
    spec = {"name": "resume", "model": {"name": str(model)}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 192, "anchors": 6, "eval": 0}},
            "valuators": {"icp": {"use": "icp", "batch_size": 16}}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def _start(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dvbench.harness.cli", "run", str(spec), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _after_first_shard(process: subprocess.Popen, out: Path, timeout: float = 120) -> int:
    """Wait until a candidate shard is written (the run is mid-scoring); the shards then present."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        shards = list(out.glob("work/icp-*/one_shot-*.npz"))
        if shards:
            return len(shards)
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    raise AssertionError("no shard was written in time")


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model_dir) -> Path:
    """An uninterrupted run's output folder."""
    folder = tmp_path_factory.mktemp("whole")
    assert main(["run", str(_spec(folder, tiny_model_dir)), "--out", str(folder / "out")]) == 0
    return folder / "out"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["sigkill", "sigterm", "ctrl-c"])
def test_an_interrupted_run_resumes_to_the_same_scores(tmp_path, tiny_model_dir, whole, sig):
    spec = _spec(tmp_path, tiny_model_dir)

    process = _start(spec, tmp_path / "cut")
    _after_first_shard(process, tmp_path / "cut")
    os.kill(process.pid, sig)
    _, stderr = process.communicate(timeout=60)
    assert not (tmp_path / "cut/scores/icp.parquet").exists(), "the run finished before it was interrupted"
    said = " ".join(stderr.split())
    if sig == signal.SIGINT:
        assert process.returncode == 130
        assert "interrupted; finished artifacts are kept: run the same command again to resume" in said
    if sig == signal.SIGTERM:
        assert process.returncode == 143
        assert "terminated (SIGTERM); finished artifacts are kept: run the same command again to resume" in said
    if sig != signal.SIGKILL:  # a kill may leave a hidden .tmp file, never a complete-looking one
        assert not list((tmp_path / "cut").rglob("*.tmp"))
    kept = sorted((tmp_path / "cut").glob("work/icp-*/*.npz"))
    assert kept and all(len(read_npz(path)) for path in kept)  # every shard on disk is whole

    assert main(["run", str(spec), "--out", str(tmp_path / "cut")]) == 0  # resumes from what is on disk
    for name in ("icp.parquet", "icp.per_anchor.parquet", "icp.details.npz"):
        assert (tmp_path / "cut/scores" / name).read_bytes() == (whole / "scores" / name).read_bytes()
    assert pl.read_parquet(tmp_path / "cut/scores/icp.parquet").height == 192
