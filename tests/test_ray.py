"""``execution.backend: ray``: a run on Ray workers writes the same bytes as a run in this process.

The spec's section is checked without Ray; the rest runs a real Ray (marked ``ray``: each start
takes seconds): a local one the executor starts itself (2 CPUs), one shared by the fault tests,
and a cluster started with ``ray start --head`` and joined by its address. Every output file is
compared byte for byte with a local run's, except ``run.json`` (timings, provenance) and
the output folder's lock.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from dvbench.harness.errors import InputError
from dvbench.harness.progress import Progress
from dvbench.harness.spec import load_spec

SKIPPED = {"run.json", ".lock"}


def _spec(folder: Path, model: Path, candidates: int = 96, **extra) -> Path:
    """icp, one_step and grad_store in two shards each, repsim, a selection, fine-tunes and their evaluation, on the
    tiny model with one torch thread (what each Ray worker has)."""
    spec = {"name": "ray", "model": {"name": str(model), "threads": 1}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": candidates, "anchors": 4, "eval": 4}},
            "valuators": {"icp": {"use": "icp", "batch_size": 16}, "step": {"use": "one_step"},
                          "store": {"use": "grad_store"}, "repsim": {"use": "repsim"}, "random": {"use": "random"}},
            "selection": {"top": {"use": "top_k", "k": 0.25}},
            "training": {"tune": {"use": "full_finetune", "epochs": 1}},
            "evaluation": {"loss": {"use": "loss"}}, **extra}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in SKIPPED}


def _same(a: Path, b: Path) -> None:
    left, right = _files(a), _files(b)
    assert sorted(left) == sorted(right)
    assert [name for name in left if left[name] != right[name]] == []
    assert any(name.startswith("scores/") for name in left) and any(name.startswith("models/") for name in left)


@pytest.fixture(scope="module")
def local(tmp_path_factory, tiny_model_dir) -> Path:
    """The local backend's output folder."""
    from dvbench.harness.cli import main

    folder = tmp_path_factory.mktemp("local")
    assert main(["run", str(_spec(folder, tiny_model_dir)), "--out", str(folder / "out")]) == 0
    return folder / "out"


# The section, without Ray.

def test_the_section_is_validated_and_set_from_the_command_line(tmp_path, tiny_model_dir):
    spec = load_spec(_spec(tmp_path, tiny_model_dir), overrides=["execution.backend=ray", "execution.workers=4"])
    assert (spec.settings.execution.backend, spec.settings.execution.workers) == ("ray", 4)
    assert load_spec(_spec(tmp_path, tiny_model_dir)).settings.execution.backend == "local"
    with pytest.raises(InputError, match=r"execution\.backend.*'local' or 'ray'"):
        load_spec(_spec(tmp_path, tiny_model_dir), overrides=["execution.backend=spark"])
    with pytest.raises(InputError, match=r"execution.*'address' names a Ray cluster; set backend: ray"):
        load_spec(_spec(tmp_path, tiny_model_dir, execution={"address": "auto"}))
    with pytest.raises(InputError, match=r"execution\.workers"):
        load_spec(_spec(tmp_path, tiny_model_dir), overrides=["execution.workers=0"])


def test_check_without_the_ray_package_says_how_to_install_it(tmp_path, tiny_model_dir, dvbench, monkeypatch):
    import importlib.util

    spec = _spec(tmp_path, tiny_model_dir, execution={"backend": "ray"})
    assert dvbench("check", spec).returncode == 0 or importlib.util.find_spec("ray") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    checked = dvbench("check", spec)
    assert checked.returncode == 2 and "pip install 'dvbench[ray]'" in checked.stderr
    ran = dvbench("run", spec, "--out", tmp_path / "out")
    assert ran.returncode == 2 and "pip install 'dvbench[ray]'" in ran.stderr
    assert not (tmp_path / "out" / "scores").exists()


# On a real Ray.

@pytest.mark.ray
def test_a_run_on_ray_writes_the_local_runs_bytes(tmp_path, tiny_model_dir, local, dvbench):
    ran = dvbench("run", _spec(tmp_path, tiny_model_dir), "--out", tmp_path / "out",
                  "--set", "execution.backend=ray", "--set", "execution.workers=2")
    assert ran.returncode == 0, ran.stderr
    assert "ray: " in ran.stderr and "unit(s) ran on 2 worker(s) of a local Ray" in ran.stderr
    assert "Token authentication" not in ran.stdout + ran.stderr  # no line of Ray's own in a run
    _same(local, tmp_path / "out")


def _gradient_spec(folder: Path, model: Path) -> Path:
    """grad_ip and ekfac, each on its mean path and its pairs path (one layer a group), 24
    candidates in shards of 10 (10, 10, 4): EK-FAC's fitting passes too."""
    pairs = {"aggregate": "fraction_positive", "max_gradient_gb": 1e-6}
    valuators = {f"{use}{suffix}": {"use": use, "shard_size": 10, **extra}
                 for use in ("grad_ip", "ekfac") for suffix, extra in (("", {}), ("-pairs", pairs))}
    spec = {"name": "ray-gradients", "model": {"name": str(model), "threads": 1}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 24, "anchors": 3, "eval": 0}}, "valuators": valuators}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


@pytest.mark.ray
def test_gradient_valuators_on_ray_write_the_local_runs_bytes(tmp_path, tiny_model_dir, dvbench):
    """Their candidate shards, and EK-FAC's partial sums added on the driver, on 2 workers."""
    from dvbench.harness.cli import main

    spec = _gradient_spec(tmp_path, tiny_model_dir)
    assert main(["run", str(spec), "--out", str(tmp_path / "local")]) == 0
    ran = dvbench("run", spec, "--out", tmp_path / "ray", "--set", "execution.backend=ray",
                  "--set", "execution.workers=2")
    assert ran.returncode == 0, ran.stderr
    groups = len(list((tmp_path / "local").glob("work/grad_ip-*/pairs-g*-00000000.npz")))
    units = 3 + 3 * groups + 3 * 3 + 3 * groups  # grad_ip's; ekfac's fit (two passes) and scoring, its pairs'
    assert groups > 1 and f"ray: {units} unit(s) ran on 2 worker(s) of a local Ray" in ran.stderr
    left, right = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(left) == sorted(right)
    assert [name for name in left if left[name] != right[name]] == []
    assert sum(name.startswith("scores/") and name.endswith(".parquet") for name in left) >= 4
    assert any(name.endswith("eigenvalues.safetensors") for name in left)


@pytest.mark.ray
def test_an_unreachable_cluster_is_one_line_naming_its_address(tmp_path, tiny_model_dir, dvbench):
    spec = _spec(tmp_path, tiny_model_dir, execution={"backend": "ray", "address": "127.0.0.1:9"})
    ran = dvbench("run", spec, "--out", tmp_path / "out")
    assert ran.returncode == 2
    assert "execution.address 127.0.0.1:9: no Ray cluster answers" in ran.stderr


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray of 2 CPUs for the module's fault tests (the executor joins it, leaves it up)."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=False)
    yield ray
    ray.shutdown()


def _busy_workers() -> list[int]:
    """The pids of this machine's dvbench Ray workers running a unit now (Ray titles such a
    process ``ray::Worker.run``; an idle one ``ray::Worker``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::Worker.run"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class _Workers(Progress):
    """A quiet display that keeps what the executor said of its workers."""

    def __init__(self):
        self.seen = []

    def workers(self, alive, total):
        self.seen.append((alive, total))

    def __reduce__(self):  # as a display travels to a worker: a quiet one
        return Progress, ()


@pytest.mark.ray
def test_fine_tunes_and_evaluations_on_ray_are_handed_no_path_of_the_output_folder(tmp_path, tiny_model_dir,
                                                                                  ray_session):
    """Fine-tunes, loss and win-rate evaluations (win_rate's batches its own units) and the ground
    truth's losses, on workers that are never handed the output folder's path (nothing pickled to
    them names it): the driver writes every file, the local run's bytes."""
    from dvbench.harness.ray_executor import RayExecutor
    from dvbench.harness.runner import Runner

    class Unaware(RayExecutor):
        def map(self, fn, units):
            units = list(units)
            assert out.name.encode() not in ray_session.cloudpickle.dumps((fn, units))  # a string or a path's parts
            self.handed.append(len(units))
            return super().map(fn, units)

    path = _spec(tmp_path, tiny_model_dir, candidates=16, valuators={"random": {"use": "random"}},
                 evaluation={"loss": {"use": "loss"},
                             "wins": {"use": "win_rate", "judge": "reference", "max_new_tokens": 3, "batch_size": 2}},
                 ground_truth={"subsets": 3, "removal": []}, leaderboard={"bootstrap": 10})
    Runner(load_spec(path), tmp_path / "local", log=lambda line: None).run()
    spec, out, display = load_spec(path, overrides=["execution.backend=ray"]), tmp_path / "output-folder-3f9c1e", _Workers()
    executor = Unaware(spec.settings.execution, lambda line: None, display)
    executor.handed = []
    Runner(spec, out, progress=display, log=lambda line: None, executor=executor).run()
    _same(tmp_path / "local", out)
    # training, 2 loss evaluations, win_rate's 2 batches of the tuned model and 2 of the base, retraining, losses
    assert executor.handed == [1, 1, 2, 2, 3, 4]
    assert (2, 2) in display.seen and display.seen[-1] == (None, 2)


@pytest.mark.ray
def test_workers_killed_mid_unit_leave_the_same_results(tmp_path, tiny_model_dir, local, ray_session):
    from dvbench.harness.ray_executor import RayExecutor
    from dvbench.harness.runner import Runner

    spec = load_spec(_spec(tmp_path, tiny_model_dir), overrides=["execution.backend=ray"])
    out, notes, display = tmp_path / "out", [], _Workers()
    executor = RayExecutor(spec.settings.execution, notes.append, display)
    run = threading.Thread(target=Runner(spec, out, log=notes.append, executor=executor).run)
    run.start()
    deadline, killed = time.time() + 120, []
    while not killed:  # a shard written, and a worker mid-unit: kill it
        assert run.is_alive() and time.time() < deadline
        if list(out.glob("work/*/*-0*.npz")):
            killed = _busy_workers()
        time.sleep(0.01)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive()
    assert (out / "run.json").is_file()
    _same(local, out)
    assert (2, 2) in display.seen and any(alive is not None and alive < 2 for alive, _ in display.seen)


@pytest.mark.ray
def test_a_unit_that_keeps_killing_its_worker_stops_the_run_in_one_line(ray_session):
    from dvbench.harness.ray_executor import RayExecutor
    from dvbench.harness.schema import ExecutionSection

    executor = RayExecutor(ExecutionSection(backend="ray", max_retries=1))
    try:
        with pytest.raises(InputError, match=r"a Ray worker of a local Ray died on one unit 2 time\(s\)"):
            list(executor.map(lambda unit: os.kill(os.getpid(), signal.SIGKILL), [1]))
    finally:
        executor.close()


def _listening(port: int, head: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        assert head.poll() is None, "ray start --head ended"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"nothing listens on port {port}"
            time.sleep(0.2)


@pytest.mark.ray
def test_a_killed_driver_on_a_cluster_resumes_locally(tmp_path, tiny_model_dir, local):
    """A cluster of ``ray start --head``, joined by address: the driver (a real process) is killed
    after its first shard; the rerun, on the local backend, ends where the local run did."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    port = 6391
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # --block: the cluster lives as long as this process, and ends with it (no `ray stop`)
        _listening(port, head)
        spec = _spec(tmp_path, tiny_model_dir, execution={"backend": "ray", "address": f"127.0.0.1:{port}"})
        out = tmp_path / "out"
        driver = subprocess.Popen([sys.executable, "-m", "dvbench.harness.cli", "run", str(spec), "--out", str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "RAY_AUTH_MODE": "token"})  # `ray start`'s token auth
        deadline = time.time() + 120
        while not list(out.glob("work/icp-*/one_shot-*.npz")):
            assert driver.poll() is None and time.time() < deadline, driver.stderr.read()
            time.sleep(0.01)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        head.terminate()
        head.wait(timeout=60)
    from dvbench.harness.cli import main

    assert main(["run", str(spec), "--out", str(out), "--set", "execution.backend=local",
                 "--set", "execution.address=null"]) == 0
    _same(local, out)
