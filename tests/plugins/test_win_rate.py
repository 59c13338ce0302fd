"""win_rate: its judges against explicit computations, its metrics against alpaca_eval's, its wiring
to an alpaca_eval annotator through alpaca_eval's offline test decoder."""

import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from dvbench.harness.artifacts import ArtifactStore
from dvbench.plugins.evaluators.alpaca import contained
from dvbench.harness.data.generated import generate
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.records import EvalTask, Example, ModelRef
from dvbench.harness.testing import out_of_memory_above, reference_logprobs, tiny_lm
from dvbench.plugins.evaluators import judges
from dvbench.plugins.evaluators.win_rate import WinRate

OFFLINE = Path(__file__).parent / "alpaca_eval_offline" / "configs.yaml"
EVAL = tuple(dataclasses.replace(e, subset="ab"[i % 2]) for i, e in enumerate(generate(0, 0, 6, seed=2)["eval"]))


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned")
    model, tokenizer = tiny_lm("float32", seed=1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _naive_preference(judge, example, base, out):
    """P(model better) from full forwards, one label and order at a time."""
    from dvbench.harness.lm.tokens import Sequence

    model, tokenizer = load_model(judge)
    a, b = (tokenizer(x, add_special_tokens=False)["input_ids"][-1] for x in "ab")
    probs = []
    for first, second, model_label in ((base, out, b), (out, base, a)):
        text = judges.JUDGE_PROMPT.format(instruction=judges.instruction_text(example), first=first, second=second)
        prompt = tuple(tokenizer(text)["input_ids"])
        lp = {label: reference_logprobs(model, Sequence(prompt + (label,), len(prompt), 0)).item() for label in (a, b)}
        probs.append(math.exp(lp[model_label]) / (math.exp(lp[a]) + math.exp(lp[b])))
    return 1 + sum(probs) / 2


def test_local_judge_averages_both_orders(tiny_model_dir):
    judge = ModelRef(str(tiny_model_dir), dtype="float64")
    examples = EVAL[:3]
    base, out = ["The answer is 4.", "blue", "x"], ["4", "The sky is blue.", "x"]
    found = judges.local_lm(load_model(judge), examples, base, out, batch_size=2)
    for e, b, o, p in zip(examples, base, out, found):
        assert p == pytest.approx(_naive_preference(judge, e, b, o), abs=1e-9)
    assert found[2] == pytest.approx(1.5, abs=1e-12)  # identical responses: the position bias cancels


def test_reference_judge_compares_token_f1():
    example = Example("r", "What colour is the sky?", "", "The sky is blue.")
    assert judges.reference([example] * 3, ["blue", "The sky is blue.", "green"], ["The sky is blue.", "blue", "red"]) \
        == [2.0, 1.0, 1.5]
    with pytest.raises(ValueError, match="needs a reference answer"):
        judges.reference([dataclasses.replace(example, output="")], ["a"], ["b"])


def _pairwise_to_winrate():
    with contained():  # alpaca_eval's import-time warnings and logging, as dvbench keeps them out
        from alpaca_eval.metrics import pairwise_to_winrate
    return pairwise_to_winrate


def test_win_rate_uses_alpaca_eval_metrics_overall_and_per_subset(tiny_model_dir, tuned_dir, monkeypatch):
    pairwise_to_winrate = _pairwise_to_winrate()

    config = WinRate.Config(judge_model=str(tiny_model_dir), max_new_tokens=6, batch_size=4)
    evaluator, seen = WinRate(config), {}
    real = judges.local_lm
    monkeypatch.setattr(judges, "local_lm", lambda *a, **k: seen.setdefault("p", real(*a, **k)))
    task = EvalTask(ModelRef(str(tuned_dir)), ModelRef(str(tiny_model_dir)), EVAL, template=Template(name="plain"))
    result = evaluator.evaluate(task)
    expected = pairwise_to_winrate(seen["p"])
    assert result.metrics["win_rate"] == pytest.approx(float(expected["win_rate"]))
    assert result.metrics["standard_error"] == pytest.approx(float(expected["standard_error"]))
    assert result.metrics["win_rate"] == pytest.approx(100 * (sum(seen["p"]) / len(seen["p"]) - 1))
    assert set(result.by_subset) == {"a", "b"}
    rows = [p for e, p in zip(EVAL, seen["p"]) if e.subset == "b"]
    assert result.by_subset["b"]["n_total"] == len(rows)


def test_responses_and_judgements_are_kept_in_alpaca_evals_formats(tiny_model_dir, tuned_dir, tmp_path, monkeypatch):
    """Saved as the evaluation stage saves them, read back by alpaca_eval's own loader: the rows are
    the generated responses, and alpaca_eval's metric on the annotations is the win rate."""
    with contained():
        from alpaca_eval.metrics import get_winrate
        from alpaca_eval.utils import load_or_convert_to_dataframe

    generated, real = {}, WinRate.responses
    monkeypatch.setattr(WinRate, "responses", lambda self, ref, folder, examples, task, what:
                        generated.setdefault(what, real(self, ref, folder, examples, task, what)))
    task = EvalTask(ModelRef(str(tuned_dir)), ModelRef(str(tiny_model_dir)), EVAL, template=Template(name="plain"))
    result = WinRate(WinRate.Config(judge="reference", max_new_tokens=6, batch_size=4)).evaluate(task)
    ArtifactStore(tmp_path).save_json("evaluations/win_rate/m", {}, {"all": result.metrics}, beside=result.files)
    with contained():
        outputs, reference, annotations = (load_or_convert_to_dataframe(tmp_path / f"evaluations/win_rate/m.{kept}.json")
                                           for kept in ("model_outputs", "reference_outputs", "annotations"))
        alpaca_metrics = get_winrate(annotations)
    (ours, _), (theirs, _) = generated["responses"], generated["baseline responses"]
    assert ours != theirs
    assert outputs["output"].tolist() == ours and reference["output"].tolist() == theirs
    instructions = [judges.instruction_text(e) for e in EVAL]
    assert outputs["instruction"].tolist() == reference["instruction"].tolist() == instructions
    assert outputs["dataset"].tolist() == reference["dataset"].tolist() == [e.subset for e in EVAL]
    assert set(outputs["generator"]) == {tuned_dir.name} and set(reference["generator"]) == {tiny_model_dir.name}
    assert annotations["instruction"].tolist() == instructions
    assert annotations["output_1"].tolist() == theirs and annotations["output_2"].tolist() == ours
    assert set(annotations["generator_2"]) == {tuned_dir.name} and set(annotations["annotator"]) == {"reference"}
    assert annotations["preference"].tolist() == judges.reference(EVAL, theirs, ours)
    assert float(alpaca_metrics["win_rate"]) == pytest.approx(result.metrics["win_rate"])

    with contained():  # judged again, as `alpaca_eval evaluate --model_outputs --reference_outputs` would
        from alpaca_eval.main import evaluate

        board, judged = evaluate(model_outputs=tmp_path / "evaluations/win_rate/m.model_outputs.json",
                                 reference_outputs=tmp_path / "evaluations/win_rate/m.reference_outputs.json",
                                 annotators_config=str(OFFLINE), output_path=tmp_path / "judged", caching_path=None,
                                 precomputed_leaderboard=None, fn_metric="get_winrate", sort_by="win_rate",
                                 is_return_instead_of_print=True)
    assert board.loc[tuned_dir.name, "n_total"] == len(EVAL)
    assert [a["output_2"] for a in judged] == ours and [a["output_1"] for a in judged] == theirs


def _shown_swapped(instruction):
    """alpaca_eval 0.6's order shuffle (``RandomSwitchTwoColumnsProcessor`` under the annotator's
    default seed 0): whether the baseline is shown as "Output (b)"."""
    return random.Random("is_switched_outputs" + instruction + "0").choices([False, True], k=1)[0]


def test_alpaca_eval_annotator_by_path_with_the_offline_decoder(tiny_model_dir):
    examples = tuple(dataclasses.replace(e, meta={"baseline_output": f"base {i}"}) for i, e in enumerate(EVAL))
    config = WinRate.Config(judge="alpaca_eval", annotator=str(OFFLINE), baseline="baseline_output", max_new_tokens=4)
    ref = ModelRef(str(tiny_model_dir))
    result = WinRate(config).evaluate(EvalTask(ref, ref, examples, template=Template(name="plain")))
    # the decoder always answers "Output (b)": the model wins (2) where it was shown second, the
    # baseline (1) where the shuffle swapped the two
    preferences = [1.0 if _shown_swapped(judges.instruction_text(e)) else 2.0 for e in examples]
    assert 0 < preferences.count(2.0) < len(examples)  # both orders occur, so the shuffle is undone
    assert result.metrics["n_total"] == len(examples)
    assert result.metrics["n_wins"] == preferences.count(2.0)
    assert result.metrics["n_wins_base"] == preferences.count(1.0)
    assert result.metrics["win_rate"] == pytest.approx(100 * sum(p - 1 for p in preferences) / len(preferences))
    annotations = result.files["annotations.json"]  # the annotator's own records
    assert [a["preference"] for a in annotations] == preferences
    assert [a["output_1"] for a in annotations] == [e.meta["baseline_output"] for e in examples]
    assert {a["annotator"] for a in annotations} == {"alpaca_eval_offline"}
    assert {a["generator_1"] for a in annotations} == {"baseline_output"}
    assert [a["dataset"] for a in annotations] == [e.subset for e in examples]


def test_a_judge_returning_garbage_is_an_error(tiny_model_dir, tmp_path):
    config = OFFLINE.read_text().replace('value: "Output (b)"', 'value: "I cannot decide."')
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled/configs.yaml").write_text(config.replace("alpaca_eval_offline", "garbled"))
    (tmp_path / "garbled/prompt.txt").write_text((OFFLINE.parent / "prompt.txt").read_text())
    winrate = WinRate(WinRate.Config(judge="alpaca_eval", annotator=str(tmp_path / "garbled/configs.yaml"),
                                     baseline="baseline_output", max_new_tokens=2))
    examples = tuple(dataclasses.replace(e, meta={"baseline_output": "b"}) for e in EVAL[:2])
    ref = ModelRef(str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"alpaca_eval judge gave no usable preference for 2 of 2 prompts"):
        winrate.evaluate(EvalTask(ref, ref, examples, template=Template(name="plain")))


def test_config_errors():
    with pytest.raises(ValueError, match="judge alpaca_eval needs an annotator"):
        WinRate.Config(judge="alpaca_eval")


def test_alpaca_eval_side_effects_stay_out():
    """In a fresh interpreter: the root logger, the environment and stderr are untouched."""
    code = ("import logging, os, json; from dvbench.plugins.evaluators.alpaca import win_rate; "
            "env = dict(os.environ); level = logging.getLogger().level; "
            "result = win_rate([2, 1, 1.5]); "
            "print(json.dumps([level == logging.getLogger().level, env == dict(os.environ), result['win_rate']]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True, 50.0]
    assert done.stderr == ""


def test_generation_batches_are_units_of_the_tasks_executor_reading_the_shipped_folder(tiny_model_dir, tuned_dir,
                                                                                       tmp_path):
    import shutil

    from dvbench.harness.executor import Folder, LocalExecutor

    class Recording(LocalExecutor):
        def __init__(self):
            self.units = []

        def map(self, fn, units):
            units = list(units)
            self.units += units
            return super().map(fn, units)

    config = WinRate.Config(judge="reference", max_new_tokens=4, batch_size=4)
    plain = Template(name="plain")
    local = WinRate(config).evaluate(EvalTask(ModelRef(str(tuned_dir)), ModelRef(str(tiny_model_dir)), EVAL,
                                              template=plain))
    copy = tmp_path / "worker" / tuned_dir.name
    shutil.copytree(tuned_dir, copy)
    recording = Recording()
    # the task's model names the base model's folder: what the units generate comes from the folder they are given
    task = EvalTask(ModelRef(str(tiny_model_dir)), ModelRef(str(tiny_model_dir)), EVAL, template=plain,
                    executor=recording, model_folder=Folder(copy))
    there = WinRate(config).evaluate(task)
    responses = [[r["output"] for r in result.files[kept]] for result in (local, there)
                 for kept in ("model_outputs.json", "reference_outputs.json")]
    assert responses[0] != responses[1]  # the tuned model and the base answer differently
    assert responses[2:] == responses[:2]
    assert [(i, len(chosen)) for i, chosen in recording.units] == [(0, 4), (1, 2), (0, 4), (1, 2)]


@pytest.mark.parametrize("limit", [None, 2])
def test_auto_batches_give_the_responses_of_the_same_batches_by_number(tiny_model_dir, tuned_dir, monkeypatch, limit):
    """``auto`` on the CPU generates a unit in calls of 8, the batches of ``batch_size: 8``;
    on a device that runs out of memory above ``limit`` rows it backs off to calls of 2, the
    batches of ``batch_size: 2``: the same greedy responses either way, and the size recorded."""
    from dvbench.harness.lm import models

    real = models.load_model

    def small_device(ref):
        model, tokenizer = real(ref)
        if limit is not None:
            out_of_memory_above(model, limit)
        return model, tokenizer

    examples = tuple(generate(0, 0, 12, seed=3)["eval"])
    plain = Template(name="plain")

    def evaluate(batch_size):
        models.release()
        task = EvalTask(ModelRef(str(tuned_dir)), ModelRef(str(tiny_model_dir)), examples, template=plain)
        return WinRate(WinRate.Config(judge="reference", max_new_tokens=4, batch_size=batch_size)).evaluate(task)

    expected = evaluate(8 if limit is None else limit)
    monkeypatch.setattr(models, "load_model", small_device)
    auto = evaluate("auto")
    models.release()
    for kept in ("model_outputs.json", "reference_outputs.json"):
        assert auto.files[kept] == expected.files[kept]
    assert auto.files["generation.json"] == {"batch_size": 8 if limit is None else 2}
    assert "generation.json" not in expected.files
