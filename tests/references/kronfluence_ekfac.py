"""kronfluence's EK-FAC on dvbench's sequences: the independent reference that the ``ekfac``
valuator is tested (tests/plugins/test_ekfac_kronfluence.py) and benchmarked
(benchmarks/test_ekfac.py) against. Needs kronfluence 1.0.1, a test-only dependency (README's
test command installs it).

Conventions aligned with dvbench (nothing else is changed on either side):

- loss: dvbench's ``L`` is the mean answer NLL per sequence, and a batch's loss is its sum
  (kronfluence expects a summed loss): ``compute_train_loss`` returns ``Σ_i L_i``. It is written
  here from the model's own full-vocabulary logits, deliberately not with dvbench's
  :func:`~dvbench.harness.lm.loglik.answer_losses` (the answer-only head path under test): the
  definition is a shared convention, its implementation stays independent, so a fault in
  dvbench's loss shows as a mismatch instead of appearing on both sides;
- labels: ``labels: true`` ↔ ``use_empirical_fisher=True``; ``labels: sampled`` ↔
  kronfluence's ``sample=True``, where this task draws the labels with dvbench's uniform draws
  (:func:`dvbench.harness.lm.ekfac.draws`) so both fit on the same labels;
- damping: ``damping_factor=None`` is kronfluence's ``0.1 × mean(Λ)`` per module, dvbench's
  default;
- tokens: both count non-padding tokens (kronfluence through ``get_attention_mask``);
- sign and scale: kronfluence's pairwise score is ``∇L(query)ᵀ (Ĝ + λI)⁻¹ ∇L(train)``, the
  measurement being ``L`` with the true labels: dvbench's per-pair score, no sign flip;
  ``aggregate_query_gradients`` sums over the queries, N times dvbench's ``mean``;
- dtypes: kronfluence's defaults (float32 statistics, float64 eigendecompositions), or float64
  throughout with ``float64=True``.
"""

from __future__ import annotations

import logging

import torch

from dvbench.harness.lm import ekfac
from dvbench.harness.lm.loglik import collate, sample_labels


def kronfluence_scores(model, modules, anchors, candidates, *, labels: str, seed: int, folder, batch_size: int = 5,
                       float64: bool = False, aggregate: bool = False, strategy: str = "ekfac"):
    """kronfluence's EK-FAC scores for dvbench's sequences: pairwise (anchors x candidates), or
    summed over the anchors with ``aggregate``. ``model`` is wrapped in place by kronfluence, on
    the device it is on. ``strategy: identity`` gives the plain gradient inner products
    (``grad_ip``'s scores)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

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
    cpu = next(model.parameters()).device.type == "cpu"
    analyzer = Analyzer("dvbench", model, task, cpu=cpu, disable_tqdm=True, output_dir=str(folder),
                        log_level=logging.WARNING)
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=batch_of))
    dtypes = {}
    if float64:
        dtypes = {k: torch.float64 for k in ("activation_covariance_dtype", "gradient_covariance_dtype",
                                             "eigendecomposition_dtype", "lambda_dtype")}
    factor_args = FactorArguments(strategy=strategy, use_empirical_fisher=labels == "true", **dtypes)
    analyzer.fit_all_factors("factors", Items("candidates"), per_device_batch_size=batch_size, factor_args=factor_args)
    dtypes = {}
    if float64:
        dtypes = {k: torch.float64 for k in ("per_sample_gradient_dtype", "precondition_dtype", "score_dtype")}
    score_args = ScoreArguments(damping_factor=None, aggregate_query_gradients=aggregate, **dtypes)
    analyzer.compute_pairwise_scores("scores", "factors", Items("anchors"), Items("candidates"),
                                     per_device_query_batch_size=len(anchors), per_device_train_batch_size=batch_size,
                                     score_args=score_args)
    return analyzer.load_pairwise_scores("scores")["all_modules"].numpy()
