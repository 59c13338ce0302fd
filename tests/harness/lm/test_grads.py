import pytest
import torch

from dvbench.harness.errors import InputError
from dvbench.harness.lm.grads import layer_terms, per_example_grads, tracked_linears
from dvbench.harness.lm.loglik import answer_loglik, collate
from dvbench.harness.testing import reference_logprobs


def _autograd(model, seq, params):
    """``∇ L(θ, x)`` of one unpadded sequence through the model's own forward."""
    return torch.autograd.grad(-reference_logprobs(model, seq).mean(), params)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [2, 8])
def test_per_example_grads_equal_autograd_one_example_at_a_time(tiny, sequences, padding_side, batch_size):
    model, _ = tiny
    linears = tracked_linears(model)
    chosen = sequences[::5]
    seen = []
    grads = per_example_grads(model, chosen, linears, batch_size=batch_size, padding_side=padding_side,
                              advance=seen.append)
    assert sum(seen) == len(chosen) and max(seen) == min(batch_size, len(chosen))
    for i, seq in enumerate(chosen):
        expected = _autograd(model, seq, [m.weight for m in linears.values()])
        for name, g in zip(linears, expected):
            torch.testing.assert_close(grads[name][i], g, rtol=1e-9, atol=1e-12)


def test_default_tracks_every_block_linear_and_a_pattern_narrows_it(tiny):
    model, _ = tiny
    names = set(tracked_linears(model))
    expected = {f"model.layers.{i}.{part}" for i in range(2) for part in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert names == expected  # not lm_head, not embeddings
    assert set(tracked_linears(model, r"layers\.1\.mlp")) == {n for n in expected if n.startswith("model.layers.1.mlp")}
    with pytest.raises(InputError, match="no linear layer matches nothing_here; .*model.layers.0.self_attn.q_proj"):
        tracked_linears(model, "nothing_here")
    with pytest.raises(InputError, match="not a valid regular expression"):
        tracked_linears(model, "(")


def test_the_model_is_left_as_found(tiny, sequences):
    model, _ = tiny
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    try:
        before = {n: p.requires_grad for n, p in model.named_parameters()}
        losses = layer_terms(model, collate(sequences[:3]), tracked_linears(model), lambda *terms: None)
        assert {n: p.requires_grad for n, p in model.named_parameters()} == before
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
    torch.testing.assert_close(losses, torch.tensor(-answer_loglik(model, sequences[:3]).mean), rtol=0, atol=1e-10)
