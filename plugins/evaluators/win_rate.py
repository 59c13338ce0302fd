"""``win_rate``: AlpacaEval-style win rate of the fine-tuned model against a baseline (docs/definitions.md § Metrics).

For each eval prompt (the template's query, no answer), the fine-tuned model's response is
generated in batches (greedy unless ``temperature > 0``; each batch a unit of work of the task's
executor, seeded by its place in the order: :mod:`dvbench.harness.lm.generate`) and judged
against the baseline's: the
base model's own response (``baseline: base_model``, generated the same way, once per run) or the
eval set's ``baseline_output`` column (``baseline: baseline_output``; AlpacaEval's files carry the
paper's Pythia responses there). A judge (:mod:`~dvbench.plugins.evaluators.judges`) gives one
preference per prompt, 1 = baseline better, 2 = model better, 1.5 = tie; the win rate,
``mean(preference − 1) × 100``, its standard error and the counts come from alpaca_eval's own
metric function, overall and per example ``subset``.

Beside the metrics it keeps, in alpaca_eval's own formats, ``model_outputs.json`` and
``reference_outputs.json`` (one ``{"instruction", "output", "generator", "dataset"}`` per prompt:
the instruction as the judge saw it, the response, the model that wrote it, the example's subset
when it has one), which ``alpaca_eval evaluate --model_outputs ... --reference_outputs ...``
judges again, and ``annotations.json``, each prompt's judgement (``instruction``, ``output_1``:
the baseline's, ``generator_1``, ``output_2``: the model's, ``generator_2``, ``dataset``,
``annotator``, ``preference``; the alpaca_eval judge's records as its annotator wrote them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.executor import Folder
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import AUTO, BatchSize, Sizes, ran_at
from dvbench.harness.records import EvalResult, EvalTask, ModelRef
from dvbench.harness.roles import Evaluator

AUTO_UNIT = 64  # prompts per unit of work with batch_size: auto


class WinRate(Evaluator):
    """Responses generated, judged pairwise against a baseline, summarised by alpaca_eval's metrics."""

    name = "win_rate"
    version = "1.1.0"
    hands_units = True

    class Config(Config):
        judge: Literal["local_lm", "reference", "alpaca_eval"] = Field(
            "local_lm", description="Who compares the two responses: `local_lm`, a local model's preference (both "
                                    "orders averaged); `reference`, the higher token F1 against the eval set's "
                                    "reference answer; `alpaca_eval`, an alpaca_eval annotator (`annotator`).")
        judge_model: str = Field("embedded", description="`local_lm`: the judging model, any dvbench model name "
                                                         "(absolute paths for folders).")
        annotator: str | None = Field(None, description="`alpaca_eval`: the annotator config's name (e.g. "
                                                        "`weighted_alpaca_eval_gpt4_turbo`, which needs "
                                                        "`OPENAI_API_KEY`) or the path of a `configs.yaml`; "
                                                        "required with that judge.")
        baseline: Literal["base_model", "baseline_output"] = Field(
            "base_model", description="The baseline's responses: the base model's (`base_model`), or the eval "
                                      "set's `baseline_output` column.")
        max_new_tokens: int = Field(256, ge=1, description="Longest response in tokens (the query is cut from the "
                                                           "left to leave room).")
        temperature: float = Field(0.0, ge=0, description="0: greedy. Above: sampling, seeded by the spec's `seed`.")
        top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling's mass, with `temperature > 0`.")
        batch_size: BatchSize = Field(8, description="Prompts per `generate` call, and per unit of work; the "
                                                      "local judge reads both labels from one forward per "
                                                      "prompt, `2 × batch_size` prompts (both orders) per "
                                                      f"forward. `auto`: units of {AUTO_UNIT} prompts, generated "
                                                      "whole at first on a GPU and in halves while out of "
                                                      "memory (the CPU: 8 per call; the judge: 8); the size "
                                                      "used is in `generation.json` beside the metrics.")

        @model_validator(mode="after")
        def _annotator(self):
            if self.judge == "alpaca_eval" and not self.annotator:
                raise ValueError("judge alpaca_eval needs an annotator, e.g. annotator: weighted_alpaca_eval_gpt4_turbo")
            return self

    def check(self) -> None:
        """The judge can run here: local_lm's model resolves offline; an alpaca_eval annotator
        exists and its API key is set."""
        if self.config.judge == "local_lm":
            from dvbench.harness.lm.models import locate

            try:
                locate(ModelRef(self.config.judge_model))
            except InputError as error:
                raise InputError(f"win_rate judge_model {self.config.judge_model!r}: {error}") from None
        if self.config.judge == "alpaca_eval":
            from dvbench.plugins.evaluators.alpaca import unmet

            problem = unmet(self.config.annotator)
            if problem:
                raise InputError(problem)

    def __init__(self, config=None):
        super().__init__(config)
        self._baseline: dict[tuple, list[str]] = {}
        self._judge = None  # the local judge, loaded once

    def evaluate(self, task: EvalTask) -> EvalResult:
        examples = list(task.examples)
        if not examples:
            raise InputError("win_rate needs an eval set; give data.eval")
        outputs, used = self.responses(task.model, task.model_folder, examples, task, "responses")
        baseline = self.baseline(examples, task)
        base = "baseline_output" if self.config.baseline == "baseline_output" else Path(task.base.source).name
        model_outputs = _outputs(examples, outputs, Path(task.model.source).name)
        reference_outputs = _outputs(examples, baseline, base)
        annotations = self.judge(examples, reference_outputs, model_outputs, task)
        preferences = [float("nan") if a.get("preference") is None else float(a["preference"]) for a in annotations]
        bad = [e.id for e, p in zip(examples, preferences) if not 1 <= p <= 2]  # NaN: no preference
        if bad:
            raise InputError(f"win_rate: the {self.config.judge} judge gave no usable preference for {len(bad)} of "
                             f"{len(examples)} prompts (first: {bad[0]!r}); preferences must lie in [1, 2]")
        from dvbench.plugins.evaluators.alpaca import win_rate

        groups = defaultdict(list)
        for e, p in zip(examples, preferences):
            if e.subset:
                groups[e.subset].append(p)
        files = {"model_outputs.json": model_outputs, "reference_outputs.json": reference_outputs,
                 "annotations.json": annotations}
        if self.config.batch_size == AUTO:
            files["generation.json"] = used
        return EvalResult(win_rate(preferences), self.name, self.version, self.provenance()["config"],
                          {name: win_rate(values) for name, values in sorted(groups.items())}, files)

    def baseline(self, examples, task: EvalTask) -> list[str]:
        if self.config.baseline == "baseline_output":
            missing = [e.id for e in examples if not e.meta.get("baseline_output")]
            if missing:
                raise InputError(f"win_rate: baseline baseline_output, but {len(missing)} eval examples have no "
                                 f"'baseline_output' column value (first: {missing[0]!r}); use baseline: base_model")
            return [str(e.meta["baseline_output"]) for e in examples]
        key = (task.base, tuple(e.id for e in examples), task.template, task.seed)
        if key not in self._baseline:
            self._baseline[key] = self.responses(task.base, None, examples, task, "baseline responses")[0]
        return self._baseline[key]

    def responses(self, ref: ModelRef, folder: Folder | None, examples, task: EvalTask,
                  what: str) -> tuple[list[str], dict[str, int]]:
        """``ref``'s responses, batch by batch on the task's executor, each unit reading the model
        from ``folder`` where it runs, when given; and the batch size they ran at."""
        from dvbench.harness.lm.generate import batches
        from dvbench.harness.lm.models import load_tokenizer
        from dvbench.harness.lm.tokens import Encoder

        encoder = Encoder(load_tokenizer(ref), task.template)
        prompts = [encoder.prompt(e, room=self.config.max_new_tokens) for e in examples]
        unit = AUTO_UNIT if self.config.batch_size == AUTO else self.config.batch_size
        order = batches(prompts, unit)
        sizes = Sizes.of(self.config, {"batch_size": unit}, device=ref.device, what="evaluation.win_rate")
        responses = [""] * len(prompts)
        with task.progress.task(f"win_rate {what}", len(prompts), "prompts") as advance:
            unit_ref = ref if folder is None else replace(ref, source="")  # the folder's path, where a unit runs
            batch = partial(_batch, unit_ref, folder, prompts, self.config, sizes, task.seed, advance)
            used = []
            for chosen, (found, ran) in zip(order, task.executor.map(batch, enumerate(order))):
                for i, response in zip(chosen, found):
                    responses[i] = response
                used.append(ran)
        return responses, ran_at(used)

    def judge(self, examples, reference_outputs: list[dict], model_outputs: list[dict], task: EvalTask) -> list[dict]:
        """alpaca_eval's annotation records, one per prompt, each with its ``preference``."""
        from dvbench.plugins.evaluators import judges

        if self.config.judge == "alpaca_eval":
            from dvbench.plugins.evaluators.alpaca import annotate

            return annotate(self.config.annotator, reference_outputs, model_outputs)
        baseline, outputs = [r["output"] for r in reference_outputs], [m["output"] for m in model_outputs]
        if self.config.judge == "reference":
            preferences, annotator = judges.reference(examples, baseline, outputs), "reference"
        else:
            if self._judge is None:
                from dvbench.harness.lm.models import load_model

                self._judge = load_model(ModelRef(self.config.judge_model, device=task.base.device))
            with task.progress.task("win_rate judge", 2 * len(examples), "prompts") as advance:
                preferences = judges.local_lm(self._judge, examples, baseline, outputs,
                                              batch_size=_int(self.config, "batch_size"), advance=advance)
            annotator = f"local_lm:{self.config.judge_model}"
        return [_annotation(r, m, annotator, p) for r, m, p in zip(reference_outputs, model_outputs, preferences)]


def _batch(ref: ModelRef, folder: Folder | None, prompts: list, config: WinRate.Config, sizes: Sizes, seed: int,
           advance, item: tuple[int, list[int]]) -> tuple[list[str], dict]:
    """A unit of work: the responses to batch ``index`` of ``chosen`` prompts, by ``ref``'s model
    (``ref`` with ``folder``'s path where the unit runs as its source, when given), and the batch
    size it ran at. Generated whole, seeded by :func:`batch_seed` of its place; in parts of
    ``sizes["batch_size"]`` where that is smaller (``auto`` on the CPU, or backed off), each part
    seeded by its place in the unit too."""
    from dvbench.harness.lm.generate import batch_seed, generate_batch
    from dvbench.harness.lm.models import resident

    index, chosen = item
    model, tokenizer = resident(ref if folder is None else replace(ref, source=str(folder.path())))

    def run(counted) -> list[str]:
        step, found = sizes["batch_size"], []
        for part, start in enumerate(range(0, len(chosen), step)):
            rows = chosen[start:start + step]
            found += generate_batch(model, tokenizer, [prompts[i] for i in rows], max_new_tokens=config.max_new_tokens,
                                    temperature=config.temperature, top_p=config.top_p,
                                    seed=batch_seed(seed, index) if step >= len(chosen) else
                                    batch_seed(batch_seed(seed, index), part))
            counted(len(rows))
        return found

    return sizes.run(run, advance), sizes.record()


def _int(config, name: str) -> int:
    """A batch-size option as a number: ``auto`` is its default where nothing backs off."""
    value = getattr(config, name)
    return type(config).model_fields[name].default if value == AUTO else value


def _outputs(examples, responses: list[str], generator: str) -> list[dict]:
    """alpaca_eval's model-outputs records of ``responses`` to ``examples``."""
    from dvbench.plugins.evaluators.judges import instruction_text

    return [{"instruction": instruction_text(e), "output": r, "generator": generator,
             **({"dataset": e.subset} if e.subset else {})} for e, r in zip(examples, responses)]


def _annotation(reference: dict, model: dict, annotator: str, preference: float) -> dict:
    """An alpaca_eval annotation record: the baseline's response as output 1, the model's as 2."""
    record = {"instruction": model["instruction"], "output_1": reference["output"],
              "generator_1": reference["generator"], "output_2": model["output"], "generator_2": model["generator"]}
    if "dataset" in model:
        record["dataset"] = model["dataset"]
    return {**record, "annotator": annotator, "preference": preference}


@hookimpl
def dvbench_register_evaluators(register):
    register(WinRate)
