"""The executor seam: a unit that writes a folder gets one from its executor, and a unit that
reads one gets it shipped, so an executor whose units run elsewhere never hands them a path of
the output folder, and the run's files are the local run's bytes."""

import tempfile
from pathlib import Path

import cloudpickle
import pytest
import yaml

from dvbench.harness.errors import InputError
from dvbench.harness.executor import Folder, LocalExecutor, files_key, folder_files, write_folder
from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in {"run.json", ".lock"}}


def test_a_folder_travels_as_its_files_and_is_written_whole(tmp_path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "weights.bin").write_bytes(bytes(range(256)))
    (source / "sub" / "config.json").write_text("{}")
    files = folder_files(source)
    assert files == {"sub/config.json": b"{}", "weights.bin": bytes(range(256))}
    copy = tmp_path / "elsewhere" / "model"
    copy.mkdir(parents=True)
    (copy / "stale.txt").write_text("from before")  # a folder written again holds only the new files
    write_folder(copy, files)
    assert _tree(copy) == _tree(source) and not copy.with_name("model.partial").exists()
    assert files_key(files) == files_key(folder_files(copy))
    assert files_key(files) != files_key({**files, "weights.bin": b"changed"})
    assert files_key(files) != files_key({"other.bin": files["weights.bin"], "sub/config.json": b"{}"})
    with pytest.raises(InputError, match="would lie outside"):
        write_folder(tmp_path / "bad", {"../escaped": b"x"})


def test_the_local_executor_hands_units_the_output_folders_own_paths(tmp_path):
    out, work = tmp_path / "models" / "m", tmp_path / "work" / "m"

    def fine_tune(unit, into, scratch):
        into.mkdir(parents=True)
        (into / "model.txt").write_text(unit)
        return into, scratch

    assert list(LocalExecutor().map_into(fine_tune, ["a"], [(out, work)])) == [(out, work)]
    assert (out / "model.txt").read_text() == "a"
    assert LocalExecutor().ship(out).path() == out


class Elsewhere(LocalExecutor):
    """Units as a distributed executor runs them, in this process: a unit writes into a scratch
    folder whose files the driver's side copies into the output folder, reads copies of the
    folders it is shipped, and receives nothing that names the output folder."""

    def __init__(self, out: Path, scratch: Path):
        self.out, self.scratch, self.units = out, scratch, []

    def _unaware(self, *shipped) -> None:
        assert self.out.name.encode() not in cloudpickle.dumps(shipped)  # as a string or a path's parts

    def map(self, fn, units):
        units = list(units)
        self._unaware(fn, units)
        self.units += units
        return super().map(fn, units)

    def map_into(self, fn, units, folders):
        units = list(units)
        self._unaware(fn, units)
        for unit, (out, _) in zip(units, folders):
            with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
                into = Path(tmp) / "out" / out.name
                result = fn(unit, into, Path(tmp) / "work")
                write_folder(out, folder_files(into))
            yield result

    def ship(self, folder):
        files = folder_files(folder)
        copy = self.scratch / "shipped" / files_key(files) / folder.name
        write_folder(copy, files)
        return Folder(copy)


def test_fine_tunes_and_evaluations_elsewhere_write_the_local_runs_bytes(tmp_path, tiny_model_dir):
    spec = {"name": "elsewhere", "model": {"name": str(tiny_model_dir), "threads": 1}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 16, "anchors": 2, "eval": 3}},
            "valuators": {"random": {"use": "random"}},
            "selection": {"top": {"use": "top_k", "k": 0.25}},
            "training": {"tune": {"use": "full_finetune", "batch_size": 4}},
            "evaluation": {"loss": {"use": "loss"},
                           "wins": {"use": "win_rate", "judge": "reference", "max_new_tokens": 3, "batch_size": 2}},
            "ground_truth": {"subsets": 3, "removal": []}, "leaderboard": {"bootstrap": 10}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    local, there, scratch = tmp_path / "local", tmp_path / "output-folder-3f9c1e", tmp_path / "scratch"
    scratch.mkdir()
    Runner(load_spec(tmp_path / "spec.yaml"), local, log=lambda line: None).run()
    elsewhere = Elsewhere(there, scratch)
    Runner(load_spec(tmp_path / "spec.yaml"), there, log=lambda line: None, executor=elsewhere).run()
    assert _tree(there) == _tree(local)
    assert any(name.startswith("models/") for name in _tree(local))
    shipped = {p.name for p in (scratch / "shipped").glob("*/*")}
    assert shipped == {p.name for p in (local / "models").iterdir() if p.is_dir()}  # every model read as a copy
    batches = [u for u in elsewhere.units if isinstance(u, tuple) and isinstance(u[0], int)]
    assert [i for i, _ in batches] == [0, 1, 0, 1]  # win_rate's batches of 2 of 3 prompts: the model's, the base's
