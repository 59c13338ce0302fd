"""``win_rate``: AlpacaEval-style win rate of the fine-tuned model against a baseline (SPEC.md).

For each eval prompt (the template's query, no answer), the fine-tuned model's response is
generated in batches (greedy unless ``temperature > 0``) and judged against the baseline's: the
base model's own response (``baseline: base_model``, generated the same way, once per run) or the
eval set's ``baseline_output`` column (``baseline: baseline_output``; AlpacaEval's files carry the
paper's Pythia responses there). A judge (:mod:`~dvbench.plugins.evaluators.judges`) gives one
preference per prompt, 1 = baseline better, 2 = model better, 1.5 = tie; the win rate,
``mean(preference − 1) × 100``, its standard error and the counts come from alpaca_eval's own
metric function, overall and per example ``subset``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import Field, model_validator

from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import EvalResult, EvalTask, ModelRef
from dvbench.harness.roles import Evaluator


class WinRate(Evaluator):
    """Responses generated, judged pairwise against a baseline, summarised by alpaca_eval's metrics."""

    name = "win_rate"
    version = "1.0.0"

    class Config(Config):
        judge: Literal["local_lm", "reference", "alpaca_eval"] = Field(
            "local_lm", description="local_lm: a local model's preference between the two responses; reference: "
                                    "token F1 with the reference answer; alpaca_eval: an alpaca_eval annotator.")
        judge_model: str = Field("embedded", description="local_lm: the judging model (a dvbench model name).")
        annotator: str | None = Field(None, description="alpaca_eval: the annotator config's name or path, e.g. "
                                                        "weighted_alpaca_eval_gpt4_turbo (API keys needed).")
        baseline: Literal["base_model", "baseline_output"] = Field(
            "base_model", description="base_model: the base model's responses; baseline_output: the eval set's "
                                      "baseline_output column.")
        max_new_tokens: int = Field(256, ge=1, description="Longest response in tokens.")
        temperature: float = Field(0.0, ge=0, description="0: greedy; above: sampling, seeded by the spec's seed.")
        top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling's mass (with temperature > 0).")
        batch_size: int = Field(8, ge=1, description="Prompts per generate call (and judge prompts per forward: twice this).")

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
        outputs = self.responses(task.model, examples, task, "responses")
        baseline = self.baseline(examples, task)
        preferences = self.judge(examples, baseline, outputs, task)
        bad = [e.id for e, p in zip(examples, preferences) if not 1 <= p <= 2]  # NaN: no preference
        if bad:
            raise InputError(f"win_rate: the {self.config.judge} judge gave no usable preference for {len(bad)} of "
                             f"{len(examples)} prompts (first: {bad[0]!r}); preferences must lie in [1, 2]")
        from dvbench.plugins.evaluators.alpaca import win_rate

        groups = defaultdict(list)
        for e, p in zip(examples, preferences):
            if e.subset:
                groups[e.subset].append(p)
        return EvalResult(win_rate(preferences), self.name, self.version, self.provenance()["config"],
                          {name: win_rate(values) for name, values in sorted(groups.items())})

    def baseline(self, examples, task: EvalTask) -> list[str]:
        if self.config.baseline == "baseline_output":
            missing = [e.id for e in examples if not e.meta.get("baseline_output")]
            if missing:
                raise InputError(f"win_rate: baseline baseline_output, but {len(missing)} eval examples have no "
                                 f"'baseline_output' column value (first: {missing[0]!r}); use baseline: base_model")
            return [str(e.meta["baseline_output"]) for e in examples]
        key = (task.base, tuple(e.id for e in examples), task.template, task.seed)
        if key not in self._baseline:
            self._baseline[key] = self.responses(task.base, examples, task, "baseline responses")
        return self._baseline[key]

    def responses(self, ref: ModelRef, examples, task: EvalTask, what: str) -> list[str]:
        from dvbench.harness.lm.generate import generate
        from dvbench.harness.lm.models import load_model
        from dvbench.harness.lm.tokens import Encoder

        model, tokenizer = load_model(ref)
        encoder = Encoder(tokenizer, task.template)
        prompts = [encoder.prompt(e, room=self.config.max_new_tokens) for e in examples]
        with task.progress.task(f"win_rate {what}", len(prompts), "prompts") as advance:
            return generate(model, tokenizer, prompts, max_new_tokens=self.config.max_new_tokens,
                            batch_size=self.config.batch_size, temperature=self.config.temperature,
                            top_p=self.config.top_p, seed=task.seed, advance=advance)

    def judge(self, examples, baseline: list[str], outputs: list[str], task: EvalTask) -> list[float]:
        from dvbench.plugins.evaluators import judges

        if self.config.judge == "reference":
            return judges.reference(examples, baseline, outputs)
        if self.config.judge == "alpaca_eval":
            from dvbench.plugins.evaluators.alpaca import annotate

            return annotate(self.config.annotator, [judges.instruction_text(e) for e in examples], baseline, outputs)
        if self._judge is None:
            from dvbench.harness.lm.models import load_model

            self._judge = load_model(ModelRef(self.config.judge_model))
        with task.progress.task("win_rate judge", 2 * len(examples), "prompts") as advance:
            return judges.local_lm(self._judge, examples, baseline, outputs, batch_size=self.config.batch_size,
                                   advance=advance)


@hookimpl
def dvbench_register_evaluators(register):
    register(WinRate)
