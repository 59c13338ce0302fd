"""The ground-truth stage end to end, where the linear datamodel is exact to first order: a
trainer that takes one SGD step of size η on the subset's summed loss from the base model.
Then L(θ_S, x) = L(θ, x) − η Σ_{z∈S} ∇L(x)·∇L(z) + O(η²), so grad_ip's LDS approaches 1 as
η → 0, while random's does not. The LDS here is recomputed naively from the saved losses."""

import types

import numpy as np
import polars as pl
import pytest
import yaml
from pydantic import Field
from scipy.stats import spearmanr

from dvbench.harness.config import Config
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.plugins import get_plugin_manager, load_registry
from dvbench.harness.records import TrainedModel
from dvbench.harness.roles import Trainer
from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec


class OneSgdStep(Trainer):
    """θ − η ∇_W Σ_{z∈S} L(θ, z) on the tracked linear weights (grad_ip's), saved as a folder."""

    name = "one_sgd_step"
    calls = 0
    seen: set[tuple[str, ...]] = set()  # the examples' ids of every training

    class Config(Config):
        eta: float = Field(1e-5, gt=0, description="Step size.")

    def train(self, task):
        import torch

        from dvbench.harness.lm.grads import tracked_linears
        from dvbench.harness.lm.models import load_model
        from dvbench.harness.lm.tokens import Encoder

        type(self).calls += 1
        type(self).seen.add(tuple(z.id for z in task.examples))
        model, tokenizer = load_model(task.model)
        encoder = Encoder(tokenizer, task.template)
        weights = [m.weight for m in tracked_linears(model).values()]
        total = 0
        for z in task.examples:  # one unpadded forward per example: L(θ, z), the mean answer NLL
            seq = encoder.training(z)
            ids = torch.tensor([seq.ids])
            logp = model(ids).logits[0].log_softmax(-1)[seq.answer_start - 1:-1]
            total = total - logp.gather(-1, ids[0, seq.answer_start:, None]).mean()
        grads = torch.autograd.grad(total, weights)
        with torch.no_grad():
            for w, g in zip(weights, grads):
                w.sub_(self.config.eta * g)
        model.save_pretrained(task.out)
        tokenizer.save_pretrained(task.out)
        return TrainedModel(task.model, task.model, self.name, self.version, self.provenance()["config"], {})


def _registry():
    @hookimpl
    def dvbench_register_trainers(register):
        register(OneSgdStep)

    module = types.ModuleType("one_sgd_step")
    module.dvbench_register_trainers = dvbench_register_trainers
    pm = get_plugin_manager(autoload=False)
    pm.register(module, name="one_sgd_step")
    return load_registry(pm)


def _spec(folder, model_dir, eta, **truth):
    spec = {"name": "truth", "model": {"name": str(model_dir), "dtype": "float64"}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 16, "anchors": 3, "eval": 0}},
            "valuators": {"grad_ip": {"use": "grad_ip", "aggregate": "fraction_positive"},
                          "random": {"use": "random", "seed": 3}},
            "training": {"step": {"use": "one_sgd_step", "eta": eta}},
            "ground_truth": {"subsets": 12, "fraction": 0.5, "removal": [0.25], "random_removals": 2, **truth}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return load_spec(folder / "spec.yaml", registry=_registry())


def _naive_lds(per_anchor, mask, losses):
    return np.mean([spearmanr(mask.astype(float) @ per_anchor[i], -losses[:, i]).statistic
                    for i in range(per_anchor.shape[0])])


@pytest.fixture(scope="module")
def run_at(tmp_path_factory, tiny_model_dir):
    """``run_at(η)``: one run of the spec at step size η per module, as (its folder, spec, result)."""
    runs = {}

    def run(eta):
        if eta not in runs:
            folder = tmp_path_factory.mktemp("truth")
            spec = _spec(folder, tiny_model_dir, eta)
            runs[eta] = folder, spec, Runner(spec, folder / "out", log=lambda line: None).run()
        return runs[eta]
    return run


@pytest.mark.parametrize("eta", [1e-3, 1e-5])
def test_grad_ip_predicts_one_sgd_step_retraining(run_at, eta):
    folder, _, result = run_at(eta)
    truth = result.truth
    subsets, losses = truth.of("subset")
    assert [r.k for r in subsets] == list(range(12)) and truth.subsets.sum(1).tolist() == [8] * 12
    grad_ip = result.scores["grad_ip"].per_anchor
    lds = _naive_lds(grad_ip, truth.subsets, losses)
    if eta == 1e-5:
        assert lds >= 0.99
    random_lds = np.mean([spearmanr(truth.subsets.astype(float) @ result.scores["random"].values,
                                    -losses[:, i]).statistic for i in range(3)])
    assert abs(random_lds) < lds and lds > 0.9
    random_global = result.tables["lds"].filter((pl.col("valuator") == "random") & (pl.col("kind") == "global"))
    assert random_global["ci_low"].item() <= 0 <= random_global["ci_high"].item()  # no signal, within its interval
    table = result.tables["lds"].filter((pl.col("valuator") == "grad_ip") & (pl.col("kind") == "per_anchor"))
    assert table["lds"].item() == pytest.approx(lds, abs=1e-12)
    assert table["ci_low"].item() <= table["lds"].item() <= table["ci_high"].item()
    saved = pl.read_parquet(folder / "out/ground_truth/losses.parquet")
    assert saved.filter(pl.col("kind") == "subset").height == 12 * 3
    assert np.array_equal(saved.filter(pl.col("kind") == "base")["loss"].to_numpy(), truth.base_losses)


def test_removal_retrains_leave_out_each_valuators_top_and_random_sets(run_at):
    result = run_at(1e-5)[2]
    removals, _ = result.truth.of("removal")
    randoms, _ = result.truth.of("random")
    assert sorted((r.valuator, r.q) for r in removals) == [("grad_ip", 0.25), ("random", 0.25)]
    assert [(r.k, r.q) for r in randoms] == [(0, 0.25), (1, 0.25)]
    losses = {r: row for r, row in zip(*result.truth.of("removal"))}
    random_mean = np.mean([row.mean() for row in result.truth.of("random")[1]])
    table = result.tables["removal"]
    for r, row in losses.items():
        got = table.filter(pl.col("valuator") == r.valuator)["effect"].item()
        assert got == pytest.approx(row.mean() - random_mean, abs=1e-12)
    for label in ("grad_ip", "random"):  # the model retrained without the top 4, by a plain sort
        valued = result.scores[label]
        top = {cid for _, cid in sorted(zip(-valued.values, valued.candidate_ids))[:4]}
        assert tuple(c for c in valued.candidate_ids if c not in top) in OneSgdStep.seen


def test_a_second_run_trains_nothing_and_an_interrupted_bank_resumes_to_the_same_bytes(run_at, tmp_path):
    folder, spec, _ = run_at(1e-5)
    whole = folder / "out"

    def interrupt_on_the_fifth(self, task, real=OneSgdStep.train):
        if type(self).calls == 4:
            type(self).calls += 1
            raise KeyboardInterrupt
        return real(self, task)

    OneSgdStep.calls = 0
    original = OneSgdStep.train
    OneSgdStep.train = interrupt_on_the_fifth
    try:
        with pytest.raises(KeyboardInterrupt):
            Runner(spec, tmp_path / "cut", log=lambda line: None).run()
    finally:
        OneSgdStep.train = original
    assert len(list((tmp_path / "cut/models").glob("step-*.metrics.json"))) == 4
    Runner(spec, tmp_path / "cut", log=lambda line: None).run()
    for name in ("ground_truth/losses.parquet", "scores/grad_ip.parquet"):
        assert (tmp_path / "cut" / name).read_bytes() == (whole / name).read_bytes()

    def refuse(self, task):
        raise AssertionError("trained again")

    OneSgdStep.train = refuse
    try:
        Runner(spec, whole, log=lambda line: None).run()
    finally:
        OneSgdStep.train = original
