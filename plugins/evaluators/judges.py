"""Pairwise judges for ``win_rate``: each returns one preference per eval example in alpaca_eval's
encoding, 1 = the baseline's response is better, 2 = the model's, 1.5 = a tie, values between
for a judge's confidence.

- ``local_lm``: an AlpacaEval-style pairwise prompt to a local model (any dvbench model name,
  the embedded one by default; no network). The preference is read from the log-probabilities of
  the two answer labels, ``a`` and ``b``, after the prompt; both orders are judged and averaged,
  which cancels the judge's position bias: ``P(model) = (P(b | base, model) + P(a | model, base)) / 2``.
- ``reference``: for eval sets with reference answers: the response whose token F1 with the
  reference (lower-cased words) is higher wins; equal F1 is a tie.
- ``alpaca_eval``: any annotator config of the alpaca_eval package, by name or path
  (:func:`dvbench.plugins.evaluators.alpaca.annotate`); API annotators need their keys.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from dvbench.harness.errors import InputError
from dvbench.harness.records import Example

JUDGE_PROMPT = """Which of the two responses below follows the instruction better? Consider helpfulness, accuracy and \
level of detail. Answer with the letter of the better response only.

## Instruction
{instruction}

## Response (a)
{first}

## Response (b)
{second}

Answer: Response ("""


def instruction_text(example: Example) -> str:
    """The instruction as AlpacaEval shows it to a judge: the instruction, then its input."""
    return f"{example.instruction}\n\n{example.input}" if example.input else example.instruction


def local_lm(judge, examples: Sequence[Example], baseline: Sequence[str], outputs: Sequence[str], *,
             batch_size: int = 8, advance=None) -> list[float]:
    """Preferences from a local model's probabilities of ``a`` and ``b``, both orders averaged;
    ``judge`` is the loaded ``(model, tokenizer)``."""
    from dvbench.harness.lm.loglik import next_token_logprobs

    model, tokenizer = judge
    labels = [tokenizer("a", add_special_tokens=False)["input_ids"][-1],
              tokenizer("b", add_special_tokens=False)["input_ids"][-1]]
    prompts = [_prompt_ids(tokenizer, JUDGE_PROMPT.format(instruction=instruction_text(example), first=first,
                                                          second=second))
               for example, base, out in zip(examples, baseline, outputs)
               for first, second in ((base, out), (out, base))]
    logp = next_token_logprobs(model, prompts, labels, batch_size=batch_size * 2, advance=advance).reshape(-1, 2, 2)
    prefers_b = [1 / (1 + math.exp(a - b)) for a, b in logp[:, 0]]  # model shown as (b)
    prefers_a = [1 / (1 + math.exp(b - a)) for a, b in logp[:, 1]]  # model shown as (a)
    return [1 + (pb + pa) / 2 for pb, pa in zip(prefers_b, prefers_a)]


def _prompt_ids(tokenizer, text: str) -> tuple[int, ...]:
    """The judge prompt as the judge's chat turn when it has a chat template, else as plain text;
    the assistant's answer starts with ``Response (``."""
    if getattr(tokenizer, "chat_template", None):
        head, tail = text.rsplit("\n\n", 1)
        chat = tokenizer.apply_chat_template([{"role": "user", "content": head}], tokenize=False,
                                             add_generation_prompt=True)
        return tuple(tokenizer(chat + tail, add_special_tokens=False)["input_ids"])
    return tuple(tokenizer(text)["input_ids"])


def reference(examples: Sequence[Example], baseline: Sequence[str], outputs: Sequence[str]) -> list[float]:
    """2 when the model's response has the higher token F1 with the reference answer, 1 when the
    baseline's has, 1.5 when equal."""
    missing = [e.id for e in examples if not e.output]
    if missing:
        raise InputError(f"the reference judge needs a reference answer ('output') for every eval example; "
                         f"{len(missing)} have none (first: {missing[0]!r}); use judge: local_lm")
    preferences = []
    for example, base, out in zip(examples, baseline, outputs):
        ours, theirs = _f1(out, example.output), _f1(base, example.output)
        preferences.append(2.0 if ours > theirs else 1.0 if ours < theirs else 1.5)
    return preferences


def _f1(response: str, answer: str) -> float:
    got, want = Counter(re.findall(r"\w+", response.lower())), Counter(re.findall(r"\w+", answer.lower()))
    shared = sum((got & want).values())
    if not shared:
        return 0.0
    precision, recall = shared / sum(got.values()), shared / sum(want.values())
    return 2 * precision * recall / (precision + recall)
