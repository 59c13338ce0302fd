"""Batched, left-padded generation equals generating one prompt at a time."""

import torch

from dvbench.harness.data.generated import generate as generate_data
from dvbench.harness.lm.generate import generate
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.testing import tiny_lm


def test_batched_greedy_generation_equals_one_at_a_time():
    model, tokenizer = tiny_lm("float64")
    encoder = Encoder(tokenizer, Template(name="plain"))
    prompts = [encoder.prompt(e, room=12) for e in generate_data(0, 0, 7, seed=1)["eval"]]
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    for prompt, response in zip(prompts, batched):
        out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        assert response == tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
    assert any(batched)


def test_sampling_is_seeded_and_leaves_the_global_generator_alone():
    model, tokenizer = tiny_lm("float64")
    prompts = [tuple(tokenizer("Name a colour:")["input_ids"])] * 3
    state = torch.random.get_rng_state()
    one = generate(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=5) == one
    assert generate(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=6) != one
