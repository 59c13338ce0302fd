import numpy as np
import pytest
import torch

from dvbench.harness.errors import InputError
from dvbench.harness.lm.loglik import answer_loglik, collate, next_token_logprobs, token_logprobs
from dvbench.harness.testing import reference_logprobs, tiny_lm


def _naive(model, seq):
    """One sequence, no padding, the model's full-vocabulary logits."""
    with torch.no_grad():
        return reference_logprobs(model, seq).sum().item()


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_batched_equals_one_at_a_time_with_full_logits(tiny, sequences, padding_side, batch_size):
    model, _ = tiny
    expected = np.array([_naive(model, s) for s in sequences])
    got = answer_loglik(model, sequences, batch_size=batch_size, padding_side=padding_side)
    assert len({len(s.ids) for s in sequences}) > 10  # padding really happens
    np.testing.assert_allclose(got.sum, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.count, [len(s.answer) for s in sequences])
    np.testing.assert_allclose(got.mean, expected / got.count, rtol=0, atol=1e-6)


def test_the_output_head_sees_only_answer_positions(tiny, sequences, monkeypatch):
    model, _ = tiny
    linear, rows = torch.nn.functional.linear, []

    def spy(x, weight, bias=None):
        if weight.shape[0] == model.config.vocab_size:
            rows.append(x.reshape(-1, x.shape[-1]).shape[0])
        return linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    answer_loglik(model, sequences, batch_size=8)
    assert sum(rows) == sum(len(s.answer) for s in sequences)


def test_log_softmax_is_float32_for_a_bfloat16_model(sequences):
    """Expected: each sequence alone, unpadded, through the model's own forward; its last hidden
    states (bfloat16) through the head and the log-softmax in float32. A bfloat16 log-softmax
    (the model's own logits) differs by about 3e-2."""
    model, _ = tiny_lm("bfloat16")
    chosen = sequences[:4]
    with torch.no_grad():
        logp = token_logprobs(model, collate(chosen))
        expected = []
        for s in chosen:
            ids = torch.tensor([s.ids])
            hidden = model(ids, output_hidden_states=True).hidden_states[-1][0, s.answer_start - 1:-1]
            logits = hidden.float() @ model.lm_head.weight.float().T
            expected.append(logits.log_softmax(-1).gather(-1, ids[0, s.answer_start:, None])[:, 0])
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp, torch.cat(expected), rtol=0, atol=1e-5)


def test_progress_advances_by_every_sequence(tiny, sequences):
    seen = []
    answer_loglik(tiny[0], sequences, batch_size=5, advance=seen.append)
    assert sum(seen) == len(sequences) and max(seen) == 5


def test_models_with_scaled_logits_are_refused(tiny, sequences):
    model, _ = tiny_lm()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(InputError, match="final_logit_softcapping"):
        answer_loglik(model, sequences[:2])


def test_padding_side_is_checked(sequences):
    with pytest.raises(ValueError, match="'left' or 'right'"):
        collate(sequences, "middle")


@pytest.mark.slow
def test_embedded_model_batched_equals_full_logits():
    from dvbench.harness.data.generated import generate
    from dvbench.harness.lm.models import load_model
    from dvbench.harness.template import Template
    from dvbench.harness.lm.tokens import Encoder
    from dvbench.harness.records import ModelRef

    model, tok = load_model(ModelRef("embedded"))
    data = generate(3, 3, 0)
    enc = Encoder(tok, Template())
    sequences = [enc.one_shot(z, x) for z in data["candidates"] for x in data["anchors"]]
    expected = np.array([_naive(model, s) for s in sequences])
    for side in ("left", "right"):
        got = answer_loglik(model, sequences, batch_size=4, padding_side=side)
        np.testing.assert_allclose(got.mean, expected / got.count, rtol=1e-4)


def test_next_token_logprobs_equal_the_full_forward(tiny, sequences):
    model, _ = tiny
    prompts = [s.ids[:s.answer_start] for s in sequences]  # mixed lengths: padding is exercised
    tokens = [5, 17, 200]
    found = next_token_logprobs(model, prompts, tokens, batch_size=3)
    for prompt, row in zip(prompts, found):
        with torch.no_grad():
            expected = model(torch.tensor([prompt])).logits[0, -1].log_softmax(-1)[tokens]
        np.testing.assert_allclose(row, expected.numpy(), rtol=1e-9)
