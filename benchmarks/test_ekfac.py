"""ekfac against kronfluence 1.0.1's EK-FAC, end to end (factors and scores), in one run.

    python -m pytest benchmarks/test_ekfac.py --benchmark-columns=mean,rounds

The embedded model (float32) with the MLP layers of its 30 blocks tracked (90 linear layers,
``tracked: mlp``), M = 200 candidates and N = 8 anchors: Alpaca-GPT4 rows of at most 96 tokens
(../shared/data; dvbench's generated data when absent). Both fit on the same labels (sampled with
dvbench's draws, :mod:`kronfluence_ekfac` (tests/references)) in batches of 8 and give the mean (for
kronfluence: the sum) over anchors per candidate; kronfluence keeps its default dtypes (float32
statistics, float64 eigendecompositions), as dvbench does for a float32 model. One round each:
about 6.5 and 14.5 minutes on two CPU cores (the model load counted in dvbench's time only). The
two must agree (Spearman ≥ 0.99) and dvbench must be at least 1.5 times faster.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from dvbench.harness.data.files import load_examples
from dvbench.harness.data.generated import generate
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from kronfluence_ekfac import kronfluence_scores
from dvbench.plugins.valuators.ekfac import EkfacValuator

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "alpaca_gpt4"
N, M, MAX_TOKENS, TRACKED = 8, 200, 96, "mlp"
RESULTS: dict[str, tuple[float, np.ndarray]] = {}


@pytest.fixture(scope="module")
def task(embedded):
    _, tokenizer = embedded
    encoder = Encoder(tokenizer, Template())
    if SHARED.is_dir():
        pool = [e for e in load_examples(SHARED / "candidates_sample.jsonl")[:5000]
                if len(encoder.zero_shot(e).ids) <= MAX_TOKENS]
    else:
        pool = list(generate(N + M, 0, 0)["candidates"])
    return ValuationTask(tuple(pool[N:N + M]), tuple(pool[:N]), ModelRef("embedded"), template=Template(),
                         tracked=TRACKED)


def _run(benchmark, peak_rss_mib, record_property, name, fn):
    holder = {}
    peak = peak_rss_mib(lambda: holder.update(values=benchmark.pedantic(fn, rounds=1, iterations=1)))
    RESULTS[name] = (benchmark.stats.stats.mean, np.asarray(holder["values"]))
    record_property(f"{name} peak MiB", peak)
    record_property(f"{name} seconds", round(RESULTS[name][0], 1))


@pytest.mark.filterwarnings("ignore:`torch.cuda.amp.GradScaler:FutureWarning")
def test_kronfluence(benchmark, peak_rss_mib, record_property, task, tmp_path):
    model, tokenizer = load_model(task.model)  # a copy of its own: kronfluence wraps modules in place
    encoder = Encoder(tokenizer, task.template)
    anchors, candidates = [encoder.training(x) for x in task.anchors], [encoder.training(z) for z in task.candidates]

    def scores():
        return kronfluence_scores(model, tracked_linears(model, task.tracked), anchors, candidates, labels="sampled",
                                  seed=task.seed, folder=tmp_path, batch_size=8, aggregate=True)[0] / N

    _run(benchmark, peak_rss_mib, record_property, "kronfluence", scores)


def test_ekfac(benchmark, peak_rss_mib, record_property, task):  # its time includes loading the model
    _run(benchmark, peak_rss_mib, record_property, "dvbench", lambda: EkfacValuator().score(task).values)


def test_ratio(record_property):
    (ours, values), (theirs, reference) = RESULTS["dvbench"], RESULTS["kronfluence"]
    rho = spearmanr(values, reference).statistic
    record_property("spearman", round(rho, 5))
    record_property("speed-up", round(theirs / ours, 2))
    assert rho >= 0.99
    assert theirs / ours >= 1.5
