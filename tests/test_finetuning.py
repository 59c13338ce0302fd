"""The training and evaluation stages: every selected subset fine-tuned once, every model measured,
both reused by the next run."""

import polars as pl
import pytest
import yaml

from dvbench.harness.config import ConfigError
from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec
from dvbench.plugins.evaluators.loss import LossEvaluator
from dvbench.plugins.trainers.full_finetune import FullFinetune


def _spec(tmp_path, model, **sections):
    data = {"name": "ft", "model": {"name": str(model), "dtype": "float64"}, "template": {"name": "plain"},
            "data": {"generated": {"candidates": 12, "anchors": 3, "eval": 6}},
            "valuators": {"icp": {"use": "icp"}, "random": {"use": "random"}},
            "selection": {"bins": {"use": "score_bins", "reference": "icp", "bins": ["<=0.5", ">0.5"]},
                          "rand": {"use": "random", "k": 4}},
            "training": {"ft": {"use": "full_finetune", "learning_rate": 0.01, "batch_size": 2}},
            "evaluation": {"loss": {"use": "loss"}}, **sections}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_subset_is_trained_once_and_evaluated(tmp_path, tiny_model_dir, monkeypatch):
    spec = _spec(tmp_path, tiny_model_dir)
    result = Runner(load_spec(spec), tmp_path / "out", log=lambda line: None).run()
    training = pl.read_parquet(tmp_path / "out/training/ft.parquet")
    selections = {label: pl.read_parquet(tmp_path / f"out/selections/{label}.parquet") for label in ("bins", "rand")}
    expected = {(label, row["valuator"], row["subset"]) for label, frame in selections.items()
                for row in frame.unique(["valuator", "subset"]).iter_rows(named=True)}
    assert {(r["selection"], r["valuator"], r["subset"]) for r in training.iter_rows(named=True)} == expected
    rand = training.filter(pl.col("selection") == "rand")
    assert rand["model"].n_unique() == 1  # a random subset is the same for every valuator: trained once
    models = set(training["model"])
    assert {p.name for p in (tmp_path / "out/models").iterdir() if p.is_dir()} == models

    table = result.tables["evaluation_loss"]
    overall = table.filter(pl.col("eval_subset") == "all")
    assert overall.height == training.height and (overall["delta"] != 0).all()
    saved = pl.read_parquet(tmp_path / "out/leaderboard/evaluation_loss.parquet")
    assert saved.equals(table)

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a saved result")

    monkeypatch.setattr(FullFinetune, "train", refuse)
    monkeypatch.setattr(LossEvaluator, "evaluate", refuse)
    again = Runner(load_spec(spec), tmp_path / "out", log=lambda line: None).run()
    assert again.tables["evaluation_loss"].equals(table)


def test_training_spec_errors_name_the_entry(tmp_path, tiny_model_dir):
    spec = _spec(tmp_path, tiny_model_dir, training={"ft": {"use": "full_finetune", "selections": ["nope"]}})
    with pytest.raises(ConfigError, match=r"training.ft.selections.0 .*unknown selection label 'nope'; labels: bins, rand"):
        load_spec(spec)
    spec = _spec(tmp_path, tiny_model_dir, training={})
    with pytest.raises(ConfigError, match="evaluators measure fine-tuned models: add a 'training' section"):
        load_spec(spec)
