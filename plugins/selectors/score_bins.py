"""``score_bins``: bins on a reference valuator's scores, rank-matched for every valuator (docs/definitions.md § Selectors).

A bin is a comparison with a threshold on the reference's scores, e.g. ``>0.8`` or ``<=0.5``
(the paper's ICP bins: ``<=0.5, >0.5, >0.8, >0.85, >0.9``, nested). Its size ``n`` is the number
of candidates whose *reference* score passes it. Every valuator then gets the ``n`` candidates
its own ranking puts first: the top ``n`` for ``>``/``>=`` bins, the bottom ``n`` for
``<``/``<=`` bins, equal scores ordered by candidate id. For the reference itself this is
exactly the thresholded set (a group of equal scores never straddles a threshold), so bins of
different valuators have equal sizes and their overlap measures agreement.
"""

from __future__ import annotations

import re

import numpy as np
from pydantic import Field, field_validator

from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Scores, Selection, best_first
from dvbench.harness.roles import Selector

BIN = re.compile(r"^\s*(<=|>=|<|>)\s*(-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")
PAPER_BINS = ("<=0.5", ">0.5", ">0.8", ">0.85", ">0.9")
COMPARE = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}


class ScoreBins(Selector):
    """Threshold bins on the reference's scores, same-size bins from every valuator's ranking."""

    name = "score_bins"
    version = "1.0.0"

    class Config(Config):
        bins: list[str] = Field(list(PAPER_BINS), min_length=1, description="Each a comparison (`>`, `>=`, `<`, "
                                "`<=`) and a threshold, e.g. `>0.8`, `<=0.5`, `<-1e-3`; the default is the paper's "
                                "ICP bins (nested). Subsets are named after the bins.")

        @field_validator("bins")
        @classmethod
        def _parse(cls, bins: list[str]) -> list[str]:
            bad = [b for b in bins if not BIN.match(b)]
            if bad:
                raise ValueError(f"cannot read bin {bad[0]!r}: write a comparison (>, >=, <, <=) and a number, "
                                 f"e.g. '>0.8'")
            canonical = [_canonical(b) for b in bins]
            if len(set(canonical)) != len(canonical):
                raise ValueError(f"bins repeat: {', '.join(bins)}")
            return canonical

    def select(self, scores: Scores, *, reference: Scores, seed: int) -> Selection:
        if reference.candidate_ids != scores.candidate_ids:
            raise InputError("score_bins: the reference valuator scored another candidate pool")
        ids = np.asarray(scores.candidate_ids, dtype=str)
        best = best_first(ids, scores.values)
        worst = np.lexsort((ids, np.asarray(scores.values, dtype=np.float64)))
        subsets = {}
        for label in self.config.bins:
            op, threshold = BIN.match(label).group(1, 2)
            size = int(np.count_nonzero(COMPARE[op](np.asarray(reference.values, dtype=np.float64), float(threshold))))
            order = best if op.startswith(">") else worst
            subsets[label] = tuple(scores.candidate_ids[i] for i in order[:size])
        return self.selection(subsets)


def _canonical(label: str) -> str:
    op, threshold = BIN.match(label).group(1, 2)
    return f"{op}{threshold}"


@hookimpl
def dvbench_register_selectors(register):
    register(ScoreBins)
