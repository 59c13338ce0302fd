"""bm25 against BM25 written out from its formula, and against bm25s's own retrieval."""

import math
import re
from collections import Counter

import bm25s
import numpy as np
import pytest
from bm25s.stopwords import STOPWORDS_EN

from dvbench.harness.errors import InputError
from dvbench.harness.records import Example, ModelRef, ValuationTask
from dvbench.harness.testing import check_valuator, tiny_task
from dvbench.plugins.valuators.bm25 import Bm25Valuator

CANDIDATES = (
    Example("c0", "Name a fruit.", "", "An apple; apple pie is made of apples."),
    Example("c1", "Add the numbers.", "2 and 3", "The sum of 2 and 3 is 5."),
    Example("c2", "Sort the words", "pear, fig, apple", "apple, fig, pear"),
    Example("c3", "Say hello.", "", "Hello there!"),
    Example("c4", "Is it a fruit?", "tomato", "A tomato is a fruit, botanically a berry."),
)
ANCHORS = (
    Example("a0", "Name a red fruit.", "", "An apple."),
    Example("a1", "What is the sum?", "20 and 30", "The sum is 50, the sum."),
    Example("a2", "Is it?", "", "It is."),  # stop words and one-letter words only: no query token
)
NO_MODEL = ModelRef("/nonexistent/model")  # bm25 never reads it


def _task(candidates=CANDIDATES, anchors=ANCHORS):
    return ValuationTask(candidates, anchors, NO_MODEL)


def _words(text, stopwords=True):
    """bm25s's documented tokenization: lowercase, ``(?u)\\b\\w\\w+\\b``, English stop words dropped."""
    words = re.findall(r"(?u)\b\w\w+\b", text.lower())
    return [w for w in words if not (stopwords and w in STOPWORDS_EN)]


def _reference(anchors, candidates, *, fields=("instruction", "input", "output"), k1=1.5, b=0.75, stopwords=True):
    """Lucene BM25 from its formula: idf = ln(1 + (M − df + 0.5)/(df + 0.5)), each query token
    (repeats included) adding idf · tf / (tf + k1 (1 − b + b |z| / avg|z|))."""
    def text(e):
        return "\n".join(getattr(e, f) for f in fields)

    docs = [Counter(_words(text(z), stopwords)) for z in candidates]
    lengths = [sum(d.values()) for d in docs]
    average = sum(lengths) / len(docs)
    matrix = np.zeros((len(anchors), len(candidates)))
    for i, x in enumerate(anchors):
        for t in _words(text(x), stopwords):
            df = sum(t in d for d in docs)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            for j, d in enumerate(docs):
                matrix[i, j] += idf * d[t] / (d[t] + k1 * (1 - b + b * lengths[j] / average))
    return matrix


def _bm25(**config):
    return Bm25Valuator(Bm25Valuator.Config(**config))


def test_equals_the_formula_without_a_model():
    expected = _reference(ANCHORS, CANDIDATES)
    scores = _bm25().score(_task())
    np.testing.assert_allclose(scores.per_anchor, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(scores.values, expected.mean(axis=0), rtol=1e-12)
    assert (expected[2] == 0).all() and (expected[:2] > 0).any(axis=1).all()  # the empty query scores 0
    assert len(set(np.round(expected[0], 9))) > 2  # the ranking is not trivial


@pytest.mark.parametrize("config, reference", [
    ({"k1": 0.9, "b": 0.3}, {"k1": 0.9, "b": 0.3}),
    ({"fields": ["output"]}, {"fields": ("output",)}),
    ({"stopwords": "none"}, {"stopwords": False}),
])
def test_options_equal_the_formula(config, reference):
    expected = _reference(ANCHORS, CANDIDATES, **reference)
    np.testing.assert_allclose(_bm25(**config).score(_task()).per_anchor, expected, rtol=1e-12, atol=0)
    assert not np.allclose(expected, _reference(ANCHORS, CANDIDATES))


def test_fraction_positive_is_the_share_of_anchors_sharing_a_word():
    scores = _bm25(aggregate="fraction_positive").score(_task())
    assert scores.values.tolist() == (_reference(ANCHORS, CANDIDATES) > 0).mean(axis=0).tolist()


def test_equals_bm25s_retrieval_of_every_candidate():
    """The package's own high-level path (token ids, then ``retrieve`` of all candidates)."""
    valuator = _bm25()
    corpus = bm25s.tokenize([valuator.text(z) for z in CANDIDATES], stopwords="en", show_progress=False)
    index = bm25s.BM25(method="lucene", dtype="float64")
    index.index(corpus, show_progress=False)
    queries = [valuator.text(x) for x in ANCHORS[:2]]
    found, values = index.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False),
                                   k=len(CANDIDATES), show_progress=False)
    expected = np.zeros((2, len(CANDIDATES)))
    np.put_along_axis(expected, found, values, axis=1)
    np.testing.assert_allclose(valuator.score(_task()).per_anchor[:2], expected, rtol=1e-12, atol=0)


def test_contract():
    check_valuator(Bm25Valuator, task=tiny_task(model=NO_MODEL))


def test_candidates_without_a_word_are_refused_with_the_fields():
    silent = tuple(Example(f"c{i}", "?", "", "a") for i in range(3))
    with pytest.raises(InputError, match="no candidate has a word in its fields instruction, input, output"):
        _bm25().score(_task(candidates=silent))
