"""Token sequences with answer masks: zero-shot, one-shot and training forms, one code path.

Following docs/definitions.md § Data, a query and its answer are tokenized **separately** (no special
tokens) and concatenated as ids, so an answer's tokens are identical in every context:

    zero-shot / training:  [BOS] header  x.query  x.answer [EOS]
    one-shot:              [BOS] z.query z.answer [EOS] separator  header  x.query  x.answer [EOS]

BOS appears once, at the very start, when the tokenizer adds one to plain text. The scored
tokens are the answer and its EOS (when ``template.eos``): always the sequence's tail.

Truncation, counted in :attr:`Encoder.truncated`: an answer longer than ``max_answer_tokens``
is cut from the right once, when the example is first encoded (a cut answer gets no EOS: it did
not end), so it is the same cut answer everywhere; a sequence longer than ``max_length`` loses
tokens from the left of the demonstration first, then from the left of the query. BOS, header
and the answer are never cut.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dvbench.harness.errors import InputError
from dvbench.harness.template import Template
from dvbench.harness.records import Example


@dataclass(frozen=True)
class Sequence:
    """Token ids whose tail ``ids[answer_start:]`` is the scored answer.

    ``prefix`` counts the leading ids before the header and query: BOS, plus the demonstration
    and separator in a one-shot sequence. ``ids[prefix:]`` is the same in a zero-shot sequence
    and in an untruncated one-shot sequence of the same anchor.
    """

    ids: tuple[int, ...]
    answer_start: int
    prefix: int = 0

    @property
    def answer(self) -> tuple[int, ...]:
        return self.ids[self.answer_start:]


class Encoder:
    """Builds every sequence form of a tokenizer and template; each example is tokenized once."""

    def __init__(self, tokenizer, template: Template | None = None):
        self.tokenizer = tokenizer
        self.template = template or Template()
        bos = tokenizer.bos_token_id
        self.bos = (bos,) if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else ()
        eos = tokenizer.eos_token_id
        if self.template.eos and eos is None:
            raise InputError("template.eos is on but the tokenizer has no EOS token; set template.eos: false")
        self.eos = (eos,) if self.template.eos else ()
        self.header = self._ids(self.template.header)
        self.separator = self._ids(self.template.separator)
        self.truncated: Counter[str] = Counter()
        self._pieces: dict[Example, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def _ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()

    def pieces(self, example: Example) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(query ids, answer ids)`` of ``example``; the answer cut to ``max_answer_tokens``
        (counted once per example) and followed by EOS unless cut."""
        if example not in self._pieces:
            query = self._query(example)
            answer = self._ids(example.output)
            if len(answer) > self.template.max_answer_tokens:
                self.truncated["answer"] += 1
                answer = answer[: self.template.max_answer_tokens]
            else:
                answer += self.eos
            if not answer:
                raise InputError(f"example {example.id!r}: its answer has no tokens; give it an output")
            self._pieces[example] = (query, answer)
        return self._pieces[example]

    def _query(self, example: Example) -> tuple[int, ...]:
        text = self.template.query(example, self.tokenizer)
        bos = self.tokenizer.bos_token
        if self.bos and bos and text.startswith(bos):  # a chat template's own BOS: added as an id
            text = text[len(bos):]
        return self._ids(text)

    def prompt(self, x: Example, room: int = 0) -> tuple[int, ...]:
        """``[BOS] header x.query``: what a model continues to answer ``x`` (no answer needed),
        the query cut from the left so that ``room`` tokens more still fit in ``max_length``."""
        query = self._query(x)
        keep = self.template.max_length - room - len(self.bos) - len(self.header)
        if keep < 1:
            raise InputError(f"template.max_length ({self.template.max_length}) leaves no room for a query "
                             f"and {room} generated tokens; raise max_length")
        if len(query) > keep:
            self.truncated["query"] += 1
            query = query[len(query) - keep:]
        return self.bos + self.header + query

    def zero_shot(self, x: Example) -> Sequence:
        """``[BOS] header x.query x.answer``: the sequence of ``s_zs(x)`` and of ``L(θ, x)``."""
        return self._build((), x)

    def training(self, z: Example) -> Sequence:
        """The fine-tuning and gradient sequence of ``z``: its zero-shot form, so ``L(θ, z)`` is
        the same quantity for the trainer and for every gradient valuator."""
        return self._build((), z)

    def one_shot(self, z: Example, x: Example) -> Sequence:
        """``[BOS] z.query z.answer separator header x.query x.answer``: the sequence of ``s_os(x, z)``."""
        query, answer = self.pieces(z)
        return self._build(query + answer + self.separator, x)

    def _build(self, demonstration: tuple[int, ...], x: Example) -> Sequence:
        query, answer = self.pieces(x)
        fixed = len(self.bos) + len(self.header) + len(answer)
        room = self.template.max_length - fixed
        if room < 0:
            raise InputError(
                f"example {x.id!r}: its answer ({len(answer)} tokens) with BOS and header leaves no room "
                f"under template.max_length ({self.template.max_length}); raise max_length or lower "
                f"max_answer_tokens"
            )
        if len(demonstration) + len(query) > room:
            if demonstration:
                self.truncated["demonstration"] += 1
                demonstration = demonstration[len(demonstration) - max(0, room - len(query)):]
            if len(query) > room:
                self.truncated["query"] += 1
                query = query[len(query) - room:]
        prefix = self.bos + demonstration
        ids = prefix + self.header + query + answer
        return Sequence(ids, len(ids) - len(answer), len(prefix))
