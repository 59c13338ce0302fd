"""ekfac against kronfluence 1.0.1's EK-FAC (:mod:`kronfluence_ekfac` (tests/references), which lists
the conventions aligned): same tiny model, tracked modules, data and labels, float64."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from dvbench.harness.data.generated import generate
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from kronfluence_ekfac import kronfluence_scores
from dvbench.plugins.valuators.ekfac import EkfacValuator


@pytest.mark.filterwarnings("ignore:`torch.cuda.amp.GradScaler:FutureWarning")  # kronfluence's own
@pytest.mark.parametrize("labels", ["true", "sampled"])
def test_pairs_agree_with_kronfluence(tiny_model_dir, tmp_path, labels):
    data = generate(32, 5, 0, seed=2)
    task = ValuationTask(data["candidates"], data["anchors"], ModelRef(str(tiny_model_dir), dtype="float64"),
                         template=Template(name="plain"), seed=11)
    ours = EkfacValuator(EkfacValuator.Config(aggregate="fraction_positive", labels=labels)).score(task).per_anchor

    model, tokenizer = load_model(task.model)
    encoder = Encoder(tokenizer, task.template)
    theirs = kronfluence_scores(model, tracked_linears(model), [encoder.training(x) for x in task.anchors],
                                [encoder.training(z) for z in task.candidates], labels=labels, seed=task.seed,
                                folder=tmp_path, float64=True)
    assert spearmanr(ours.ravel(), theirs.ravel()).statistic >= 0.99
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-7 * np.abs(theirs).max())  # measured: 2e-9
