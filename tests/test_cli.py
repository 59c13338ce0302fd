import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

QUICKSTART = Path(__file__).parents[1] / "specs" / "quickstart.yaml"


def test_run_then_leaderboard_prints_the_saved_tables(dvbench, tmp_path, tiny_model_dir):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["model"] = {"name": str(tiny_model_dir)}
    data["data"]["generated"].update(candidates=32, anchors=4)  # the CLI is under test, not the scores
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    run = dvbench("run", tmp_path / "spec.yaml", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "agreement, not quality: Spearman ρ" in run.stdout and f"wrote {tmp_path}" in run.stdout
    assert "AUC ↑" in run.stdout  # the generated data plants defects
    # stderr is no terminal here: one whole line per event, each stamped, no bars, nothing glued
    events = run.stderr.splitlines()
    assert events and all(re.fullmatch(r"\[\d+:\d\d:\d\d\] [^\[\r\x1b]+", line) for line in events), events
    assert any(line.endswith("] valuation: 3 valuators") for line in events)
    assert any(re.search(r"] valuation: 3/3 valuators in \d+:\d\d:\d\d", line) for line in events)
    plots = {p.name: p.read_bytes() for p in (tmp_path / "leaderboard/plots").iterdir()}
    assert set(plots) == {"spearman.png", "scatter.png", "overlap.png"}
    assert all(png.startswith(b"\x89PNG") for png in plots.values())
    for path in (tmp_path / "leaderboard/plots").iterdir():
        path.unlink()
    board = dvbench("leaderboard", tmp_path)
    assert board.returncode == 0
    assert board.stdout.split("drew")[0] in run.stdout  # the run's own closing screen
    assert "icp-mean" in board.stdout and "AUC ↑" in board.stdout
    saved = pl.read_parquet(tmp_path / "leaderboard/spearman.parquet")
    whole = dvbench("leaderboard", tmp_path, "--table", "spearman", "--format", "csv")
    assert whole.returncode == 0 and pl.read_csv(io.StringIO(whole.stdout)).equals(saved)
    rows = json.loads(dvbench("leaderboard", tmp_path, "--table", "defect_auc", "--format", "json").stdout)
    assert [r["valuator"] for r in rows] == ["icp", "icp-mean", "random"]
    assert dvbench("leaderboard", tmp_path, "--table", "spearman").stdout.startswith("| a | b | rho |")
    wrong = dvbench("leaderboard", tmp_path, "--table", "nope")
    assert wrong.returncode == 2 and "no table 'nope'; choose one of" in " ".join(wrong.stderr.split())
    assert {p.name: p.read_bytes() for p in (tmp_path / "leaderboard/plots").iterdir()} == plots  # redrawn alike


def test_leaderboard_of_an_empty_folder_says_what_to_do(dvbench, tmp_path):
    result = dvbench("leaderboard", tmp_path)
    assert result.returncode == 2
    assert "no leaderboard/*.parquet here; run `dvbench run SPEC --out" in " ".join(result.stderr.split())


def test_the_console_script_lists_builtins_with_versions():
    """The installed ``dvbench`` script, in its own process: the one test of the entry point itself."""
    script = shutil.which("dvbench", path=str(Path(sys.executable).parent))
    assert script, "the dvbench console script is not installed beside this Python"
    result = subprocess.run([script, "plugins"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in ("random", "file", "top_k"):
        assert name in result.stdout
    assert "built-in" in result.stdout and "1.0.0" in result.stdout
