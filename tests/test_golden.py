"""The scoring-regression gate, `dvbench check --golden`: the project's own gate on every built-in
valuator, and what a user sees on drift."""

import json
import shutil
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def _spec(folder: Path, model: Path) -> Path:
    (folder / "builtins.yaml").write_text((GOLDEN / "builtins.yaml").read_text().replace("TINY_MODEL", str(model)))
    shutil.copy(GOLDEN / "scores.csv", folder / "scores.csv")
    return folder / "builtins.yaml"


def test_builtin_valuators_match_the_golden_file(dvbench, tmp_path, tiny_model_dir, request):
    spec = _spec(tmp_path, tiny_model_dir)
    if request.config.getoption("--update-golden"):
        written = dvbench("check", spec, "--golden", GOLDEN / "builtins.json", "--update")
        assert written.returncode == 0, written.stderr
    done = dvbench("check", spec, "--golden", GOLDEN / "builtins.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10 valuator(s) within tolerance" in done.stdout


def test_drift_exits_1_with_a_table(dvbench, tmp_path, tiny_model_dir):
    spec = _spec(tmp_path, tiny_model_dir)
    golden = json.loads((GOLDEN / "builtins.json").read_text())
    expected = golden["valuators"]["icp-mean"]["scores"]["candidate-00002"]
    golden["valuators"]["icp-mean"]["scores"]["candidate-00002"] = expected + 1e-3
    golden["valuators"]["ekfac"]["tolerance"]["rtol"] = 0.5  # a loose tolerance hides a small change
    golden["valuators"]["ekfac"]["scores"]["candidate-00001"] *= 1.2
    del golden["valuators"]["random"]
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    done = dvbench("check", spec, "--golden", tmp_path / "golden.json", "--out", tmp_path / "run")
    assert done.returncode == 1, done.stderr
    text = " ".join(done.stdout.split())
    assert "2 score(s) drifted" in text and "candidate-00002" in text and repr(expected + 1e-3) in text
    assert "random" in text and "(every candidate)" in text and "ekfac" not in text
    assert "write the file again with --update" in text


def test_update_writes_keeps_tolerances_and_a_missing_file_says_how(dvbench, tmp_path, tiny_model_dir):
    spec = _spec(tmp_path, tiny_model_dir)
    missing = dvbench("check", spec, "--golden", tmp_path / "new.json")
    assert missing.returncode == 2 and "no golden file; write it with" in " ".join(missing.stderr.split())
    run = ("--out", tmp_path / "run")
    assert dvbench("check", spec, "--golden", tmp_path / "new.json", "--update", *run).returncode == 0
    golden = json.loads((tmp_path / "new.json").read_text())
    assert set(golden["valuators"]) == {"icp", "icp-mean", "grad_ip", "grad_ip-pairs", "ekfac", "one_step",
                                        "bm25", "repsim", "random", "file"}
    golden["valuators"]["icp"]["tolerance"] = {"rtol": 0.0, "atol": 0.25}
    (tmp_path / "new.json").write_text(json.dumps(golden))
    assert dvbench("check", spec, "--golden", tmp_path / "new.json", "--update", *run).returncode == 0
    assert json.loads((tmp_path / "new.json").read_text())["valuators"]["icp"]["tolerance"]["atol"] == 0.25
    assert dvbench("check", spec, "--update").returncode == 2  # --update needs --golden


@pytest.mark.parametrize("content", ["not json", json.dumps({"valuators": []})])
def test_a_broken_golden_file_is_refused(dvbench, tmp_path, tiny_model_dir, content):
    (tmp_path / "bad.json").write_text(content)
    done = dvbench("check", _spec(tmp_path, tiny_model_dir), "--golden", tmp_path / "bad.json")
    assert done.returncode == 2 and "write it again with --update" in done.stderr
