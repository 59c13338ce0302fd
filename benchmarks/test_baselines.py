"""repsim and bm25, each against a reference measured in the same run.

    python -m pytest benchmarks/test_baselines.py --benchmark-columns=mean,rounds

- repsim on the embedded model, N = 16 anchors and M = 32 candidates (Alpaca-GPT4 rows of 90-110
  tokens from ../shared/data, dvbench's generated data when absent): the whole valuator against
  the model's own forward with every layer's hidden states over the same sequences in the same
  batches (its floor: one forward per sequence), and against grad_ip's default `mean` on the
  same task (one forward and backward per sequence), tracking every block's linear layers.
- bm25 on dvbench's generated data, M = 2,000 candidates and N = 64 anchors, against BM25 written
  out in plain Python (tests/plugins/test_bm25.py's reference: one Counter per candidate).
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from dvbench.harness.data.generated import generate
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.plugins.valuators.bm25 import Bm25Valuator
from dvbench.plugins.valuators.grad_ip import GradIpValuator
from dvbench.plugins.valuators.repsim import RepsimValuator

N, M = 16, 32
TIMES: dict[str, float] = {}


def _reference_bm25():
    path = Path(__file__).parents[1] / "tests" / "plugins" / "test_bm25.py"
    spec = importlib.util.spec_from_file_location("bm25_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._reference


@pytest.fixture(scope="module")
def task(benchmark_rows):
    pool = benchmark_rows(N + M)
    return ValuationTask(tuple(pool[N:N + M]), tuple(pool[:N]), ModelRef("embedded"))


def _timed(benchmark, name, fn):
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    TIMES[name] = benchmark.stats.stats.mean
    return result


def test_hidden_states_forward(benchmark, task, embedded):
    model, tokenizer = embedded
    encoder = Encoder(tokenizer, task.template)
    sequences = [encoder.training(e) for e in task.anchors + task.candidates]

    def forward():
        with torch.inference_mode():
            for start in range(0, len(sequences), 16):
                batch = collate(sequences[start:start + 16])
                model(input_ids=batch.ids, attention_mask=batch.mask, output_hidden_states=True)

    _timed(benchmark, "forward", forward)


def test_repsim(benchmark, task):
    _timed(benchmark, "repsim", lambda: RepsimValuator().score(task))
    if "forward" in TIMES:
        benchmark.extra_info["vs_hidden_states_forward"] = round(TIMES["repsim"] / TIMES["forward"], 2)


def test_grad_ip_mean(benchmark, task):
    _timed(benchmark, "grad_ip", lambda: GradIpValuator().score(task))
    benchmark.extra_info["repsim_vs_grad_ip_mean"] = round(TIMES["repsim"] / TIMES["grad_ip"], 3)


@pytest.fixture(scope="module")
def pool():
    data = generate(2000, 64, 0, families=("arithmetic", "sorting", "dates"))
    return ValuationTask(data["candidates"], data["anchors"], ModelRef("embedded"))


def test_bm25(benchmark, pool):
    _timed(benchmark, "bm25", lambda: Bm25Valuator().score(pool))


def test_bm25_plain_python_reference(benchmark, pool):
    reference = _reference_bm25()
    _timed(benchmark, "bm25_reference", lambda: reference(pool.anchors, pool.candidates))
    benchmark.extra_info["bm25_vs_plain_python"] = round(TIMES["bm25"] / TIMES["bm25_reference"], 3)
