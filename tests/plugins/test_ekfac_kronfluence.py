"""ekfac against kronfluence 1.0.1's EK-FAC: same tiny model, tracked modules, data and labels.

kronfluence is a test-only dependency installed without its declared ``torchvision`` (README's
test command). Conventions aligned (and nothing else changed on either side):

- loss: dvbench's ``L`` is the mean answer NLL per sequence, and a batch's loss is its sum
  (kronfluence expects a summed loss): ``compute_train_loss`` returns ``Σ_i L_i``;
- labels: ``labels: true`` ↔ ``use_empirical_fisher=True``; ``labels: sampled`` ↔
  kronfluence's ``sample=True``, where this task draws the labels with dvbench's uniform draws
  (``ekfac.draws``) so both fit on the same labels;
- damping: ``damping_factor=None`` is kronfluence's ``0.1 × mean(Λ)`` per module, dvbench's
  default;
- tokens: both count non-padding tokens (kronfluence through ``get_attention_mask``);
- sign and scale: kronfluence's pairwise score is ``∇L(query)ᵀ (Ĝ + λI)⁻¹ ∇L(train)``, the
  measurement being ``L`` with the true labels: dvbench's per-pair score, no sign flip;
- dtypes: float64 throughout on both sides (kronfluence's defaults are float32).
"""

import logging

import numpy as np
import pytest
import torch
from kronfluence.analyzer import Analyzer, prepare_model  # README's test command installs it
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task
from kronfluence.utils.dataset import DataLoaderKwargs
from scipy.stats import spearmanr

from dvbench.harness.data.generated import generate
from dvbench.harness.lm import ekfac
from dvbench.harness.lm.grads import tracked_linears
from dvbench.harness.lm.loglik import collate, sample_labels
from dvbench.harness.lm.models import load_model
from dvbench.harness.lm.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, ValuationTask
from dvbench.plugins.valuators.ekfac import EkfacValuator

def kronfluence_scores(model, modules, anchors, candidates, *, labels, seed, folder):
    """kronfluence's EK-FAC pairwise scores (anchors x candidates) for dvbench's sequences."""
    pools = {"anchors": anchors, "candidates": candidates}
    draws = {"anchors": ekfac.draws(anchors, seed), "candidates": ekfac.draws(candidates, seed)}

    class Items(torch.utils.data.Dataset):
        def __init__(self, pool):
            self.pool = pool

        def __len__(self):
            return len(pools[self.pool])

        def __getitem__(self, index):
            return self.pool, index

    def batch_of(items):
        pool, indices = items[0][0], [i for _, i in items]
        batch = collate([pools[pool][i] for i in indices], "right")
        return {"ids": batch.ids, "mask": batch.mask, "positions": batch.positions, "rows": batch.rows,
                "cols": batch.cols, "draws": torch.cat([draws[pool][i] for i in indices])}

    class AnswerLoss(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["ids"], attention_mask=batch["mask"], position_ids=batch["positions"]).logits
            logp = logits[batch["rows"], batch["cols"] - 1].log_softmax(-1)
            targets = sample_labels(logp.detach(), batch["draws"]) if sample else batch["ids"][batch["rows"], batch["cols"], None]
            counts = torch.bincount(batch["rows"])
            return -(logp.gather(-1, targets)[:, 0] / counts[batch["rows"]]).sum()

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model, sample=False)

        def get_influence_tracked_modules(self):
            return list(modules)

        def get_attention_mask(self, batch):
            return batch["mask"]

    task = AnswerLoss()
    model = prepare_model(model, task)
    analyzer = Analyzer("dvbench", model, task, cpu=True, disable_tqdm=True, output_dir=str(folder),
                        log_level=logging.WARNING)
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=batch_of))
    f64 = torch.float64
    factor_args = FactorArguments(strategy="ekfac", use_empirical_fisher=labels == "true",
                                  activation_covariance_dtype=f64, gradient_covariance_dtype=f64,
                                  eigendecomposition_dtype=f64, lambda_dtype=f64)
    analyzer.fit_all_factors("factors", Items("candidates"), per_device_batch_size=5, factor_args=factor_args)
    score_args = ScoreArguments(damping_factor=None, per_sample_gradient_dtype=f64, precondition_dtype=f64,
                                score_dtype=f64)
    analyzer.compute_pairwise_scores("scores", "factors", Items("anchors"), Items("candidates"),
                                     per_device_query_batch_size=len(anchors), per_device_train_batch_size=5,
                                     score_args=score_args)
    return analyzer.load_pairwise_scores("scores")["all_modules"].numpy()


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
                                folder=tmp_path)
    assert spearmanr(ours.ravel(), theirs.ravel()).statistic >= 0.99
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-7 * np.abs(theirs).max())  # measured: 2e-9
