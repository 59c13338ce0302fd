"""``bm25``: lexical relevance of each candidate to each anchor (docs/definitions.md § Valuators).

The candidates are the corpus and each anchor is a query: ``v(x, z)`` is the Okapi BM25 score
of candidate ``z`` for the query ``x``, as the ``bm25s`` package computes it with its
``lucene`` variant,

    v(x, z) = Σ_{t ∈ x} idf(t) · tf(t, z) / (tf(t, z) + k1 · (1 − b + b · |z| / avg|z|)),
    idf(t) = ln(1 + (M − df(t) + 0.5) / (df(t) + 0.5)),

the sum over the query's tokens with repeats, ``tf`` a token's count in the candidate, ``|z|``
its token count, ``df`` the number of the ``M`` candidates holding the token. Texts are the
example's ``fields`` (raw, not the template's prompt) joined by newlines, tokenized by
``bm25s.tokenize``: lowercased, words of two or more word characters (``(?u)\\b\\w\\w+\\b``),
English stop words removed unless ``stopwords: none``, no stemming. The model is never read.

A non-negative score in BM25 units (idf-weighted term matches): 0 when they share no token,
higher when the candidate shares more of the anchor's rarer words. ``mean`` averages over
anchors; ``fraction_positive`` is the share of anchors the candidate shares any token with.
Cost: one pass over the texts and one sparse product per anchor, seconds for thousands of
candidates; no model, no GPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Example, Scores, ValuationTask
from dvbench.harness.roles import Valuator


class Bm25Valuator(Valuator):
    """BM25 relevance of each candidate (the corpus) to each anchor (the query)."""

    name = "bm25"
    version = "1.0.0"
    needs_model = False
    derived = ("aggregate",)

    class Config(Config):
        aggregate: Literal["mean", "fraction_positive"] = Field(
            "mean", description="`mean`: the mean BM25 score over anchors. `fraction_positive`: the fraction of "
                                "anchors the candidate shares a token with.")
        fields: list[Literal["instruction", "input", "output"]] = Field(
            ["instruction", "input", "output"], min_length=1,
            description="The example fields whose text, joined by newlines, is a candidate's document and an "
                        "anchor's query.")
        k1: float = Field(1.5, ge=0, description="Term-frequency saturation: `0` counts a token once, however "
                                                 "often it occurs.")
        b: float = Field(0.75, ge=0, le=1, description="Length normalization: `0` none, `1` full (a candidate's "
                                                       "token count against the mean).")
        stopwords: Literal["en", "none"] = Field("en", description="`en`: drop bm25s's English stop words; "
                                                                   "`none`: keep every word.")

    def score(self, task: ValuationTask) -> Scores:
        import bm25s  # imported when scoring, not at registration

        if not task.anchors:
            raise InputError("bm25 needs at least one anchor; give data.anchors (or data.generated.anchors)")
        stopwords = None if self.config.stopwords == "none" else self.config.stopwords

        def tokens(examples: tuple[Example, ...]) -> list[list[str]]:
            return bm25s.tokenize([self.text(e) for e in examples], stopwords=stopwords, return_ids=False,
                                  show_progress=False)

        documents = tokens(task.candidates)
        if not any(documents):
            raise InputError(f"bm25: no candidate has a word in its fields {', '.join(self.config.fields)}; "
                             f"give candidates text there, or choose other valuators.bm25 fields")
        index = bm25s.BM25(k1=self.config.k1, b=self.config.b, method="lucene", dtype="float64")
        index.index(documents, show_progress=False)
        empty = np.zeros(len(task.candidates))
        matrix = np.stack([index.get_scores(query) if query else empty for query in tokens(task.anchors)])
        return self.scores(task, over_anchors(matrix, self.config.aggregate), matrix)

    def text(self, example: Example) -> str:
        """The fields of ``example`` this valuator reads, joined by newlines."""
        return "\n".join(getattr(example, field) for field in self.config.fields)


@hookimpl
def dvbench_register_valuators(register):
    register(Bm25Valuator)
