"""Batched, left-padded generation equals generating one prompt at a time; a batch's sampling is
seeded by the batch alone."""

import torch

from dvbench.harness.data.generated import generate as generate_data
from dvbench.harness.lm.generate import batch_seed, batches, generate_batch
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.testing import tiny_lm


def test_batched_greedy_generation_equals_one_at_a_time():
    model, tokenizer = tiny_lm("float64")
    encoder = Encoder(tokenizer, Template(name="plain"))
    prompts = [encoder.prompt(e, room=12) for e in generate_data(0, 0, 7, seed=1)["eval"]]
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    order = batches(prompts, 4)
    assert [len(b) for b in order] == [4, 3] and sorted(sum(order, [])) == list(range(7))
    assert [len(prompts[i]) for i in sum(order, [])] == sorted(map(len, prompts), reverse=True)
    batched = {i: r for chosen in order
               for i, r in zip(chosen, generate_batch(model, tokenizer, [prompts[i] for i in chosen], max_new_tokens=12))}
    for i, prompt in enumerate(prompts):
        out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        assert batched[i] == tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
    assert any(batched.values())


def test_sampling_is_seeded_by_the_batch_and_leaves_the_global_generator_alone():
    model, tokenizer = tiny_lm("float64")
    prompts = [tuple(tokenizer("Name a colour:")["input_ids"])] * 3

    def sample(seed):
        return generate_batch(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=seed)

    state = torch.random.get_rng_state()
    one = sample(batch_seed(5, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    sample(batch_seed(5, 0))  # another batch before it changes nothing: no generator carried over
    assert sample(batch_seed(5, 1)) == one
    assert sample(batch_seed(6, 1)) != one and sample(batch_seed(5, 2)) != one
    assert batch_seed(5, 1) == batch_seed(5, 1) != batch_seed(1, 5)
