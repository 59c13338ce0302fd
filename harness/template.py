"""Named templates: an Alpaca row ``(instruction, input, output)`` -> ``(query, answer)`` text.

The template is one spec setting shared by every method (docs/definitions.md § Data). ``answer`` is always
the row's ``output``; only the query differs between templates:

- ``alpaca``: the Stanford Alpaca prompt (with or without its ``### Input:`` block);
- ``plain``: the instruction, then the input if any, each followed by a blank line;
- ``chat``: one user turn through the tokenizer's own chat template, with the generation prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dvbench.harness.records import Example

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
NAMES = ("alpaca", "plain", "chat")


@dataclass(frozen=True)
class Template:
    """How examples become token sequences; see ``specs/README.md`` § ``template``.

    ``header`` precedes the query in zero-shot and one-shot contexts alike; ``separator``
    follows a demonstration; ``eos`` appends the tokenizer's EOS token to every answer (and is
    scored); ``max_length`` bounds every sequence and ``max_answer_tokens`` every answer.
    """

    name: str = "alpaca"
    header: str = ""
    separator: str = "\n\n"
    eos: bool = True
    max_length: int = 1024
    max_answer_tokens: int = 512

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown template {self.name!r}; templates: {', '.join(NAMES)}")
        if not 0 < self.max_answer_tokens < self.max_length:
            raise ValueError(
                f"max_answer_tokens ({self.max_answer_tokens}) must be at least 1 and below "
                f"max_length ({self.max_length}), leaving room for the query"
            )

    def query(self, example: Example, tokenizer=None) -> str:
        """The query text of ``example`` (``chat`` needs the tokenizer's chat template)."""
        if self.name == "alpaca":
            text = ALPACA_INPUT if example.input else ALPACA
            return text.format(instruction=example.instruction, input=example.input)
        if self.name == "plain":
            return "".join(part + "\n\n" for part in (example.instruction, example.input) if part)
        user = example.instruction + (f"\n\n{example.input}" if example.input else "")
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat template; use 'alpaca' or 'plain'")
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
