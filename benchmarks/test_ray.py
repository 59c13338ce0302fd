"""Ray against the local backend: ICP at M = 64 candidates x N = 8 anchors on the embedded model,
the same pairs, one run.

    python -m pytest benchmarks/test_ray.py --benchmark-columns=mean,rounds

- overhead: Ray with 2 workers x 1 torch thread against the local backend on 2 threads, both
  on 2 units of 32 candidates (``shard_size``); goal ≤ 1.3x. Both are timed warm: the local
  backend's model loaded, and Ray's pool started with each worker's model loaded (a warm-up,
  untimed; its seconds are recorded as ``ray_start_s``);
- scaling: Ray with W = 1, 2, 4 and 8 workers x 1 thread on W units of 64 / W candidates,
  against 1 worker; efficiency ``t(1) / (W · t(W))``, goal ≥ 0.7 at 4 workers. A case whose
  workers the machine's cores cannot hold (the driver keeps one core) is skipped;
- on a GPU (skipped without CUDA): Ray with 1 worker holding the GPU against the local backend
  on it, both on 2 units, ``model.device: cuda``; the ratio is recorded.

Every case scores the same pairs; the scores agree within float rounding (thread counts
differ, and so does the summation order inside torch's kernels).
"""

import os
import time

import numpy as np
import pytest

from dvbench.harness.data.generated import generate
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.harness.schema import ExecutionSection
from dvbench.plugins.valuators.icp import IcpValuator

pytest.importorskip("ray")

M, N = 64, 8
TIMES: dict[str, float] = {}
SCORES: dict[str, np.ndarray] = {}


@pytest.fixture(scope="module")
def data():
    generated = generate(M, N, 0, seed=0)
    return tuple(generated["candidates"]), tuple(generated["anchors"])


def _score(benchmark, name: str, data, units: int, executor=None, threads: int | None = None, record=None,
           device: str = "cpu"):
    """ICP of the M x N pairs in ``units`` shards, timed once after a warm-up of one candidate per
    unit against one anchor (the model loaded here and, on Ray, the pool started and every
    worker's model loaded: each idle worker takes one of the first units)."""
    from dvbench.harness.executor import LocalExecutor

    candidates, anchors = data
    ref, executor = ModelRef("embedded", threads=threads, device=device), executor or LocalExecutor()
    valuator = IcpValuator(IcpValuator.Config(shard_size=M // units))
    task = ValuationTask(candidates, anchors, ref, executor=executor)
    start = time.perf_counter()
    IcpValuator(IcpValuator.Config(shard_size=1)).score(ValuationTask(candidates[:units], anchors[:1], ref,
                                                                      executor=executor))
    if record is not None:
        record("ray_start_s", round(time.perf_counter() - start, 1))
    SCORES[name] = benchmark.pedantic(lambda: valuator.score(task).per_anchor, rounds=1, iterations=1)
    TIMES[name] = benchmark.stats.stats.mean


def _ray(workers: int, gpus: float = 0):
    from dvbench.harness.ray_executor import RayExecutor

    return RayExecutor(ExecutionSection(backend="ray", workers=workers, num_cpus=1, num_gpus=gpus),
                       log=lambda line: None)


def test_local_2_threads(benchmark, data):
    _score(benchmark, "local", data, units=2, threads=2)


def test_ray_2_workers(benchmark, data, record_property):
    executor = _ray(2)
    try:
        _score(benchmark, "ray", data, units=2, executor=executor, record=record_property)
    finally:
        executor.close()


def test_ray_overhead_ratio(record_property):
    ratio = TIMES["ray"] / TIMES["local"]
    record_property("ray_2x1_vs_local_2_threads", round(ratio, 3))
    np.testing.assert_allclose(SCORES["ray"], SCORES["local"], atol=1e-4)
    assert ratio <= 1.3, ratio


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_ray_scaling(benchmark, data, workers, record_property):
    if workers + 1 > (os.cpu_count() or 1):
        pytest.skip(f"{workers} workers and the driver need {workers + 1} cores; this machine has {os.cpu_count()}")
    executor = _ray(workers)
    try:
        _score(benchmark, f"ray-{workers}", data, units=workers, executor=executor)
    finally:
        executor.close()
    if workers > 1:
        efficiency = TIMES["ray-1"] / (workers * TIMES[f"ray-{workers}"])
        record_property(f"efficiency_{workers}_workers", round(efficiency, 3))
        np.testing.assert_allclose(SCORES[f"ray-{workers}"], SCORES["ray-1"], atol=1e-4)
        if workers == 4:
            assert efficiency >= 0.7, efficiency


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


GPU = pytest.mark.skipif("not _cuda()", reason="needs a CUDA device; run on a GPU machine")


@GPU
def test_local_gpu(benchmark, data):
    _score(benchmark, "local-gpu", data, units=2, device="cuda:0")


@GPU
def test_ray_1_gpu_worker(benchmark, data, record_property):
    executor = _ray(1, gpus=1)
    try:
        _score(benchmark, "ray-gpu", data, units=2, executor=executor, device="cuda:0")
    finally:
        executor.close()
    record_property("ray_1_gpu_worker_vs_local_gpu", round(TIMES["ray-gpu"] / TIMES["local-gpu"], 3))
    np.testing.assert_allclose(SCORES["ray-gpu"], SCORES["local-gpu"], atol=1e-3)
