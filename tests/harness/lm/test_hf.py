"""The transformers adapter: its cached path equals the uncached forward, and nothing it calls
is deprecated."""

import warnings

import numpy as np
import pytest
import torch

from dvbench.harness.lm import hf
from dvbench.harness.lm.loglik import collate
from dvbench.harness.lm.prefix import prefix_loglik
from dvbench.harness.lm.tokens import Sequence
from dvbench.harness.testing import reference_logprobs


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_continuing_from_gathered_prefixes_equals_the_uncached_forward(tiny, sequences, padding_side):
    model, _ = tiny
    chosen = [s for s in sequences if s.prefix > 1][:5]
    prefixes = [s.ids[:s.prefix] for s in chosen[:3]]  # three prefixes of different lengths
    rows = [0, 2, 1, 2, 0]
    continuations = [Sequence(s.ids[s.prefix:], 1) for s in chosen]
    with torch.no_grad():
        head = collate([Sequence(tuple(p), len(p)) for p in prefixes], "left")
        layers = hf.prefix_keys_values(model, head.ids, head.mask, head.positions)
        batch = collate(continuations, padding_side)
        mask = torch.cat([head.mask[rows], batch.mask], 1)
        cached = hf.body(model, batch.ids, mask, batch.positions + head.mask.sum(1)[rows, None],
                         cache=hf.gathered_cache(model, layers, rows))
        for r, (k, c) in enumerate(zip(rows, continuations)):
            full = torch.tensor([tuple(prefixes[k]) + c.ids])
            expected = hf.body(model, full, torch.ones_like(full), torch.arange(full.shape[1])[None])[0, len(prefixes[k]):]
            real = batch.mask[r].bool()
            torch.testing.assert_close(cached[r, real], expected, rtol=0, atol=1e-12)


def test_one_shared_prefix_is_an_expanded_view_with_the_same_values(tiny, sequences):
    model, _ = tiny
    s = next(s for s in sequences if s.prefix > 1)
    with torch.no_grad():
        head = collate([Sequence(s.ids[:s.prefix], s.prefix)], "left")
        layers = hf.prefix_keys_values(model, head.ids, head.mask, head.positions)
        cache = hf.gathered_cache(model, layers, [0, 0, 0])
    keys, values = cache.layers[0].keys, cache.layers[0].values
    assert keys.shape[0] == 3 and torch.equal(keys[2], layers[0][0][0]) and torch.equal(values[1], layers[0][1][0])


def test_the_prefix_path_emits_no_deprecation_warning(tiny, sequences, caplog):
    from transformers.utils import logging as hf_logging

    model, _ = tiny
    s = next(s for s in sequences if s.prefix > 1)
    items = [(0, Sequence(s.ids[s.prefix:], s.answer_start - s.prefix))]
    hf_logging.enable_propagation()  # transformers' own deprecation notices go to its logger
    try:
        with warnings.catch_warnings(), caplog.at_level("WARNING", logger="transformers"):
            warnings.simplefilter("error")  # a FutureWarning or DeprecationWarning fails the call
            found = prefix_loglik(model, [s.ids[:s.prefix]], items)
    finally:
        hf_logging.disable_propagation()
    assert not [r for r in caplog.records if "deprecat" in r.getMessage()]
    with torch.no_grad():
        expected = reference_logprobs(model, s).sum().item()
    np.testing.assert_allclose(found, [expected], rtol=0, atol=1e-10)


def test_head_is_the_output_embedding(tiny):
    model, _ = tiny
    assert hf.head(model) is model.lm_head


def test_checkpointed_blocks_give_the_same_gradients_and_restore_the_blocks(tiny, sequences):
    model, _ = tiny
    batch = collate(sequences[:3], "right")
    embedding = model.get_input_embeddings()

    def gradient():
        model.zero_grad()
        hf.body(model, batch.ids, batch.mask, batch.positions).square().sum().backward()
        return embedding.weight.grad.clone()

    expected = gradient()
    with hf.checkpointed_blocks(model):
        assert all("forward" in layer.__dict__ for layer in hf.blocks(model))
        found = gradient()
    model.zero_grad()
    assert not any("forward" in layer.__dict__ for layer in hf.blocks(model))
    torch.testing.assert_close(found, expected, rtol=1e-12, atol=0)
