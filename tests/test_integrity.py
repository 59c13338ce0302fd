"""Nothing reused unverified, nothing written outside the run, one writer per output folder, and
what killed writes leave is cleaned: each class with its cases (OS errors and bad inputs are in
test_bad_inputs.py's catalogue)."""

import errno
import os

import pytest
import yaml

from dvbench.harness.cli import main
from dvbench.harness.lock import exclusive


def _spec(folder, model, **sections):
    spec = {"name": "integrity", "model": {"name": str(model)}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 12, "anchors": 2, "eval": 2}},
            "valuators": {"random": {"use": "random"}}, **sections}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def _run(spec, out, capsys):
    code = main(["run", str(spec), "--out", str(out)])
    return code, capsys.readouterr()


def _flip(path, at=-100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


TRAINING = {"selection": {"top": {"use": "top_k", "k": 4}},
            "training": {"ft": {"use": "full_finetune", "batch_size": 4, "learning_rate": 1e-3}}}


def test_a_damaged_fine_tuned_model_is_trained_again(tmp_path, tiny_model_dir, capsys):
    spec, out = _spec(tmp_path, tiny_model_dir, **TRAINING), tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    (weights,) = out.glob("models/ft-*/model.safetensors")
    whole = weights.read_bytes()
    _flip(weights)
    code, printed = _run(spec, out, capsys)
    assert code == 0
    assert f"models/{weights.parent.name}: training again, models/{weights.parent.name}/model.safetensors is missing or " \
           f"changed since it was written" in printed.out
    assert weights.read_bytes() == whole  # trained again, to the same bytes


def test_a_deleted_file_of_a_fine_tuned_model_is_trained_again(tmp_path, tiny_model_dir, capsys):
    spec, out = _spec(tmp_path, tiny_model_dir, **TRAINING), tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    (config,) = out.glob("models/ft-*/config.json")
    config.unlink()
    code, printed = _run(spec, out, capsys)
    assert code == 0 and "config.json is missing or changed since it was written" in printed.out and config.is_file()


def test_a_second_run_on_a_locked_folder_is_one_line_naming_the_holder(tmp_path, tiny_model_dir, capsys):
    spec, out = _spec(tmp_path, tiny_model_dir), tmp_path / "out"
    with exclusive(out):
        code, printed = _run(spec, out, capsys)
    assert code == 2
    line = printed.err.strip().splitlines()[-1]
    assert line == f"error: {out} is being written by another dvbench run (pid {os.getpid()}); wait for it to " \
                   f"finish, or give another --out"
    assert _run(spec, out, capsys)[0] == 0  # released: the folder is free again


def test_the_lock_is_released_empty_so_finished_runs_leave_the_same_bytes(tmp_path, tiny_model_dir, capsys):
    spec = _spec(tmp_path, tiny_model_dir)
    for name in ("a", "b"):
        assert _run(spec, tmp_path / name, capsys)[0] == 0
        assert (tmp_path / name / ".dvbench.lock").read_text() == ""


def test_what_killed_writes_left_is_removed_by_the_rerun(tmp_path, tiny_model_dir, capsys):
    spec, out = _spec(tmp_path, tiny_model_dir), tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    left = [out / "scores" / ".random.parquet.4242.tmp", out / "work" / "icp-0" / ".one_shot-0.npz.7.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    (out / "models" / "ft-0.partial").mkdir(parents=True)
    (out / "models" / "ft-0.partial" / "model.safetensors").write_bytes(b"half")
    code, printed = _run(spec, out, capsys)
    assert code == 0 and f"{out}: removed 3 temporary file(s) left by an interrupted run" in printed.out
    assert not any(path.exists() for path in left) and not (out / "models" / "ft-0.partial").exists()
    assert (out / "scores" / "random.parquet").is_file()


@pytest.mark.parametrize("code, expected", [(errno.EROFS, "read-only file system"),
                                            (errno.EACCES, "permission denied")])
def test_an_unwritable_output_folder_is_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch, code, expected):
    """Simulated: the tests run as root, whom neither permissions nor a read-only mount stop here."""
    from dvbench.harness import artifacts

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(artifacts.os, "replace", refuse)
    spec, out = _spec(tmp_path, tiny_model_dir), tmp_path / "out"
    status, printed = _run(spec, out, capsys)
    line = printed.err.strip().splitlines()[-1]
    assert status == 2 and line.startswith(f"error: {expected} ({out}/scores/random.parquet); finished artifacts")
    assert "Traceback" not in printed.err
    assert not list(out.rglob("*.tmp"))  # the temporary file of the refused write is gone
