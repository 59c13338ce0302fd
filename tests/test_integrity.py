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
           f"changed since it was written" in printed.err
    assert weights.read_bytes() == whole  # trained again, to the same bytes


def test_a_deleted_file_of_a_fine_tuned_model_is_trained_again(tmp_path, tiny_model_dir, capsys):
    spec, out = _spec(tmp_path, tiny_model_dir, **TRAINING), tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    (config,) = out.glob("models/ft-*/config.json")
    config.unlink()
    code, printed = _run(spec, out, capsys)
    assert code == 0 and "config.json is missing or changed since it was written" in printed.err and config.is_file()


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
    assert code == 0 and f"{out}: removed 3 temporary file(s) left by an interrupted run" in printed.err
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


def test_a_damaged_shard_is_computed_again_not_a_traceback(tmp_path, tiny_model_dir, capsys):
    spec = _spec(tmp_path, tiny_model_dir, valuators={"icp": {"use": "icp"}})
    out = tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    (shard,) = out.glob("work/icp-*/one_shot-*.npz")
    whole, scores = shard.read_bytes(), (out / "scores/icp.parquet").read_bytes()
    _flip(shard, at=len(whole) // 2)
    (out / "scores/icp.json").unlink()  # the scores must be computed again, from the shards
    code, printed = _run(spec, out, capsys)
    assert code == 0 and f"{shard} does not match the hash recorded when it was written; computing it again" \
        in printed.err
    assert shard.read_bytes() == whole and (out / "scores/icp.parquet").read_bytes() == scores


def test_a_work_file_without_its_hash_is_not_trusted(tmp_path):
    from dvbench.harness.work import Shards

    logged = []
    shards = Shards(tmp_path, logged.append)
    shards.put("part-0", {"x": [1.0, 2.0]})
    assert shards.get("part-0")["x"].tolist() == [1.0, 2.0] and not logged
    (tmp_path / "part-0.npz.sha256").unlink()  # as when a kill lands between the file and its hash
    assert shards.get("part-0") is None and not (tmp_path / "part-0.npz").exists()
    assert logged == [f"{tmp_path / 'part-0.npz'} has no recorded hash; computing it again"]


def test_damaged_ekfac_factors_are_fitted_again(tmp_path, tiny_model_dir, capsys):
    spec = _spec(tmp_path, tiny_model_dir, valuators={"ekfac": {"use": "ekfac"}})
    out = tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    (bases,) = out.glob("work/ekfac-*/eigenbases.safetensors")
    scores = (out / "scores/ekfac.parquet").read_bytes()
    _flip(bases)
    (out / "scores/ekfac.json").unlink()
    code, printed = _run(spec, out, capsys)
    assert code == 0 and f"{bases} does not match the hash recorded" in printed.err
    assert (out / "scores/ekfac.parquet").read_bytes() == scores


def test_a_damaged_checkpoint_is_not_resumed_from(tmp_path, tiny_model_dir, monkeypatch):
    from dvbench.harness.data.generated import generate
    from dvbench.harness.records import ModelRef, TrainingTask
    from dvbench.plugins.trainers import full_finetune
    from dvbench.plugins.trainers.full_finetune import FullFinetune

    examples = generate(8, 0, 0, seed=1)["candidates"]
    trainer = FullFinetune(FullFinetune.Config(batch_size=2, checkpoint_every=1, learning_rate=1e-3))
    whole = trainer.train(TrainingTask(ModelRef(str(tiny_model_dir)), examples, tmp_path / "whole"))
    work, logged = tmp_path / "work", []
    task = TrainingTask(ModelRef(str(tiny_model_dir)), examples, tmp_path / "cut", work=work, log=logged.append)

    def interrupted(*args, **kwargs):  # stop after the checkpoints, before the model is saved
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(full_finetune, "_save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(task)
    (checkpoint,) = work.glob("checkpoint-*.safetensors")
    _flip(checkpoint)
    resumed = trainer.train(task)
    assert logged == [f"{checkpoint} does not match the hash recorded when it was written; computing it again"]
    assert resumed.metrics == whole.metrics  # started over: the same training as an uninterrupted one


def test_a_truncated_shard_is_computed_again(tmp_path, tiny_model_dir, capsys):
    spec = _spec(tmp_path, tiny_model_dir, valuators={"icp": {"use": "icp"}})
    out = tmp_path / "out"
    assert _run(spec, out, capsys)[0] == 0
    (zero,) = out.glob("work/icp-*/zero_shot.npz")
    whole = zero.read_bytes()
    zero.write_bytes(whole[: len(whole) // 2])  # as a full disk or a crash mid-copy leaves it
    (out / "scores/icp.json").unlink()
    code, printed = _run(spec, out, capsys)
    assert code == 0 and f"{zero} does not match the hash recorded" in printed.err and zero.read_bytes() == whole


def test_a_cache_folder_linked_outside_the_cache_is_refused(tmp_path, monkeypatch):
    from dvbench.harness.errors import InputError
    from dvbench.harness.lm import models

    cache, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache.mkdir()
    (cache / "models").symlink_to(elsewhere)
    monkeypatch.setenv(models.CACHE_ENV, str(cache))
    (tmp_path / "m.gguf").write_bytes(b"not read: the path is refused first")
    with pytest.raises(InputError, match=f"through the symbolic link {cache / 'models'} -> {elsewhere}"):
        models.resolve(models.ModelRef(str(tmp_path / "m.gguf")))
    assert not list(elsewhere.iterdir())


def test_a_run_on_a_folder_another_process_writes_is_refused(tmp_path, tiny_model_dir, capsys):
    """Two processes: the lock is the operating system's, so it holds across them."""
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dvbench.harness.lock import exclusive\n"
                               "with exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, printed = _run(_spec(tmp_path, tiny_model_dir), out, capsys)
        assert code == 2 and f"being written by another dvbench run (pid {holder.pid})" in printed.err
    finally:
        holder.kill()
        holder.wait()
    assert _run(_spec(tmp_path, tiny_model_dir), out, capsys)[0] == 0  # the holder is gone, so is its lock
