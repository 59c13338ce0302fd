"""Responses to prompts, generated in left-padded batches with the model's own ``generate``.

The prompts are batched longest first (:func:`batches`), and each batch is generated on its own
(:func:`generate_batch`): a batch is a unit of work (win_rate's), the same wherever it runs. Greedy by default; ``temperature > 0`` samples (``top_p`` nucleus),
each batch seeded by :func:`batch_seed` of the run's seed and its place in the order, never by a
generator carried from one batch to the next (on a GPU by its own generator, so sampled
responses differ from the CPU's). Generation stops at the tokenizer's EOS token or after
``max_new_tokens``; the response is the decoded new tokens without special tokens, stripped of
surrounding whitespace.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import torch

from dvbench.harness.lm.loglik import PAD_ID


def batches(prompts: Seq[Seq[int]], batch_size: int) -> list[list[int]]:
    """The prompts' positions in batches of ``batch_size``, longest prompts first."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def batch_seed(seed: int, index: int) -> int:
    """The sampling seed of batch ``index`` (its place in :func:`batches`) under ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def generate_batch(model, tokenizer, prompts: Seq[Seq[int]], *, max_new_tokens: int = 256, temperature: float = 0.0,
                   top_p: float = 1.0, seed: int = 0) -> list[str]:
    """One response per prompt of one batch, in its order; sampling seeded by ``seed`` alone."""
    device = next(model.parameters()).device
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else PAD_ID
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    # seeded here, the caller's random state untouched: the CPU's, and the model's GPU's where it runs
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **sampling)
    return [tokenizer.decode(out[row, width:], skip_special_tokens=True).strip() for row in range(len(prompts))]

