"""The loss evaluator against each example's loss from the model's own unpadded forward."""

import dataclasses

import numpy as np
import pytest

from dvbench.harness.data.generated import generate
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import EvalTask, ModelRef
from dvbench.harness.testing import reference_logprobs, tiny_lm
from dvbench.plugins.evaluators.loss import LossEvaluator


def _reference(ref, examples):
    model, tokenizer = load_model(ref)
    encoder = Encoder(tokenizer, Template(name="plain"))
    return np.array([-reference_logprobs(model, encoder.zero_shot(e)).mean().item() for e in examples])


def test_loss_against_base_overall_and_per_subset(tiny_model_dir, tmp_path):
    tuned_model, tokenizer = tiny_lm("float32", seed=1)
    tuned_model.save_pretrained(tmp_path / "tuned")
    tokenizer.save_pretrained(tmp_path / "tuned")
    examples = generate(0, 0, 9, seed=3)["eval"]
    examples = tuple(dataclasses.replace(e, subset="ab"[i % 2]) for i, e in enumerate(examples))
    examples += (dataclasses.replace(examples[0], id="no-answer", output=""),)  # skipped: nothing to score
    base, tuned = ModelRef(str(tiny_model_dir), dtype="float64"), ModelRef(str(tmp_path / "tuned"), dtype="float64")
    evaluator = LossEvaluator(LossEvaluator.Config(batch_size=4))
    result = evaluator.evaluate(EvalTask(tuned, base, examples, template=Template(name="plain")))

    scored = examples[:-1]
    expected_tuned, expected_base = _reference(tuned, scored), _reference(base, scored)
    assert result.metrics["loss"] == pytest.approx(expected_tuned.mean(), rel=1e-10)
    assert result.metrics["base_loss"] == pytest.approx(expected_base.mean(), rel=1e-10)
    assert result.metrics["delta"] == pytest.approx((expected_tuned - expected_base).mean(), rel=1e-9)
    rows = [i for i, e in enumerate(scored) if e.subset == "b"]
    assert set(result.by_subset) == {"a", "b"}
    assert result.by_subset["b"]["loss"] == pytest.approx(expected_tuned[rows].mean(), rel=1e-10)


def test_an_eval_set_without_answers_is_refused(tiny_model_dir):
    examples = tuple(dataclasses.replace(e, output="") for e in generate(0, 0, 2, seed=3)["eval"])
    ref = ModelRef(str(tiny_model_dir))
    with pytest.raises(ValueError, match="needs eval examples with an answer"):
        LossEvaluator().evaluate(EvalTask(ref, ref, examples))
