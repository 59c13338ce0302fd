"""model.device: resolved once per run, refused when torch sees no such GPU, handed to every
role, recorded in run.json, and on a CPU machine invisible in the files (auto and cpu give the
same bytes). The numerical checks on a GPU are in tests/test_gpu.py."""

import json
import types

import numpy as np
import pytest
import torch
import yaml
from pydantic import Field

from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.devices import resolve_device
from dvbench.harness.lm.models import load_model, save_partial
from dvbench.harness.plugins import get_plugin_manager, load_registry
from dvbench.harness.records import EvalResult, ModelRef, TrainedModel
from dvbench.harness.roles import Evaluator, Trainer, Valuator
from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec
from dvbench.harness.stages.model import identity


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: torch sees ``n`` CUDA devices from now on."""
    return lambda n: monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


@pytest.mark.parametrize("setting, count, expected", [
    ("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda:0"), ("cuda:1", 2, "cuda:1"),
])
def test_a_setting_resolves_to_one_device(gpus, setting, count, expected):
    gpus(count)
    assert resolve_device(setting) == expected


def test_cuda_without_a_gpu_is_refused(gpus):
    gpus(0)
    with pytest.raises(InputError, match=r"^model.device is 'cuda' but torch sees no CUDA device: torch .* or set "
                                         r"model.device: cpu"):
        resolve_device("cuda")


def test_a_gpu_index_beyond_those_torch_sees_is_refused(gpus):
    gpus(2)
    with pytest.raises(InputError, match=r"^model.device is 'cuda:2' but torch sees 2 CUDA device\(s\), cuda:0 to "
                                         r"cuda:1; "):
        resolve_device("cuda:2")


def _spec(folder, model_dir, **extra):
    spec = {"name": "placed", "model": {"name": str(model_dir)}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 8, "anchors": 2, "eval": 2}},
            "valuators": {"icp": {"use": "icp"}, "random": {"use": "random"}}, **extra}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_an_unavailable_gpu_in_one_line(tmp_path, tiny_model_dir, dvbench, gpus, command):
    gpus(0)
    spec = _spec(tmp_path, tiny_model_dir)
    done = dvbench(command, spec, "--set", "model.device=cuda", *(["--out", tmp_path / "out"] * (command == "run")))
    assert done.returncode == 2
    assert "model.device is 'cuda' but torch sees no CUDA device: " in done.stdout + done.stderr
    assert not (tmp_path / "out" / "scores").exists()  # refused before any work


def test_a_device_that_is_none_is_refused_naming_the_key(tmp_path, tiny_model_dir, dvbench):
    done = dvbench("check", _spec(tmp_path, tiny_model_dir), "--set", "model.device=gpu")
    assert done.returncode == 2
    assert "model.device" in done.stdout + done.stderr and "give auto, cpu, cuda or cuda:N" in done.stdout + done.stderr


def test_auto_and_cpu_write_the_same_files_on_a_cpu_machine(tmp_path, tiny_model_dir, dvbench, gpus):
    gpus(0)
    spec = _spec(tmp_path, tiny_model_dir, selection={"top": {"use": "top_k", "k": 4}},
                 training={"ft": {"use": "full_finetune", "batch_size": 4, "learning_rate": 1e-3}},
                 evaluation={"loss": {"use": "loss"}}, leaderboard={"bootstrap": 0})
    assert dvbench("run", spec, "--out", tmp_path / "auto").returncode == 0
    assert dvbench("run", spec, "--out", tmp_path / "cpu", "--set", "model.device=cpu").returncode == 0

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "run.json"}

    auto, cpu = files(tmp_path / "auto"), files(tmp_path / "cpu")
    assert any(name.startswith("models/ft-") for name in auto) and auto.keys() == cpu.keys()
    assert [name for name in auto if auto[name] != cpu[name]] == []
    records = [json.loads((tmp_path / name / "run.json").read_text()) for name in ("auto", "cpu")]
    assert records[0]["devices"] == records[1]["devices"] == {
        "valuators.icp": "cpu", "training.ft": "cpu", "evaluation.loss": "cpu"}


def test_the_model_identity_names_a_gpu_but_not_the_cpu():
    """A CPU run keeps the addresses it had before devices existed; a GPU's rounding differs, so
    its results get their own, whichever of the GPUs it ran on."""
    ref = ModelRef("some/model", dtype="bfloat16")
    cpu = identity(ref, "files-sha256:0")
    assert cpu == {"source": "some/model", "dtype": "bfloat16", "threads": None, "allow_download": False,
                   "trust_remote_code": False, "fingerprint": "files-sha256:0"}
    on = [identity(ModelRef("some/model", dtype="bfloat16", device=d), "files-sha256:0") for d in ("cuda:0", "cuda:1")]
    assert on[0] == on[1] == {**cpu, "device": "cuda"}


def test_load_model_puts_the_model_on_its_device_partial_checkpoints_too(tmp_path, tiny_model_dir):
    """``meta`` stands in for a GPU: a parameter left behind on the CPU would show."""
    model, _ = load_model(ModelRef(str(tiny_model_dir), device="meta"))
    assert {p.device.type for p in model.parameters()} == {"meta"}
    base = ModelRef(str(tiny_model_dir))
    model, tokenizer = load_model(base)
    name, weight = next(iter(model.named_parameters()))
    save_partial(tmp_path, base, {name: weight.detach() + 1})
    tokenizer.save_pretrained(tmp_path)
    assert "device" not in json.loads((tmp_path / "dvbench-partial.json").read_text())["base"]
    partial, _ = load_model(ModelRef(str(tmp_path), device="meta"))
    assert {p.device.type for p in partial.parameters()} == {"meta"}


SEEN: dict[str, set] = {}  # role -> the devices its tasks named


class Seen(Valuator):
    name, version = "seen_valuator", "1"

    class Config(Config):
        pass

    def score(self, task):
        SEEN.setdefault("valuator", set()).add(task.model.device)
        return self.scores(task, np.arange(len(task.candidates), dtype=float))


class SeenTrainer(Trainer):
    name, version = "seen_trainer", "1"

    class Config(Config):
        note: str = Field("", description="Unused.")

    def train(self, task):
        SEEN.setdefault("trainer", set()).add(task.model.device)
        task.out.mkdir(parents=True, exist_ok=True)
        (task.out / "weights.txt").write_text(",".join(e.id for e in task.examples))
        tuned = ModelRef(str(task.out), dtype=task.model.dtype, device=task.model.device)
        return TrainedModel(tuned, task.model, self.name, self.version, {}, {})


class SeenEvaluator(Evaluator):
    name, version = "seen_evaluator", "1"

    class Config(Config):
        pass

    def evaluate(self, task):
        SEEN.setdefault("evaluator", set()).update({task.model.device, task.base.device})
        return EvalResult({"value": 1.0}, self.name, self.version, {})


def _registry():
    module = types.ModuleType("seen")
    module.dvbench_register_valuators = hookimpl(lambda register: register(Seen))
    module.dvbench_register_trainers = hookimpl(lambda register: register(SeenTrainer))
    module.dvbench_register_evaluators = hookimpl(lambda register: register(SeenEvaluator))
    pm = get_plugin_manager(autoload=False)
    pm.register(module, name="seen")
    return load_registry(pm)


def test_every_role_gets_the_resolved_device_and_run_json_says_so(tmp_path, tiny_model_dir, monkeypatch):
    """With the device resolved to a GPU (a stand-in: no model is loaded), every role, the ground
    truth's losses included, is handed that GPU, and the content addresses name it."""
    import dvbench.harness.lm.losses as losses

    monkeypatch.setattr("dvbench.harness.lm.devices.resolve_device", lambda setting: "cuda:3")
    monkeypatch.setattr(losses, "example_losses", lambda ref, examples, template: (
        SEEN.setdefault("ground truth", set()).add(ref.device), np.zeros(len(examples)))[1])
    SEEN.clear()
    path = _spec(tmp_path, tiny_model_dir, valuators={"seen": {"use": "seen_valuator"}},
                 selection={"top": {"use": "top_k", "k": 4}}, training={"ft": {"use": "seen_trainer"}},
                 evaluation={"ev": {"use": "seen_evaluator"}},
                 ground_truth={"subsets": 3, "removal": [0.25], "random_removals": 1})
    Runner(load_spec(path, registry=_registry()), tmp_path / "out", log=lambda line: None).run()
    assert SEEN == {role: {"cuda:3"} for role in ("valuator", "trainer", "evaluator", "ground truth")}
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["devices"] == {"valuators.seen": "cuda:3", "training.ft": "cuda:3", "evaluation.ev": "cuda:3",
                                 "ground_truth": "cuda:3"}
    assert record["model"]["device"] == "cuda"
