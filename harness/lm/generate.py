"""Responses to prompts, generated in left-padded batches with the model's own ``generate``.

Greedy by default; ``temperature > 0`` samples (``top_p`` nucleus), seeded (on a GPU by its own
generator, so sampled responses differ from the CPU's). Generation stops at
the tokenizer's EOS token or after ``max_new_tokens``; the response is the decoded new tokens
without special tokens, stripped of surrounding whitespace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import torch

from dvbench.harness.lm.loglik import PAD_ID


def generate(
    model, tokenizer, prompts: Seq[Seq[int]], *, max_new_tokens: int = 256, batch_size: int = 8,
    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, advance: Callable[[int], None] | None = None,
) -> list[str]:
    """One response per prompt (token ids), in the prompts' order; longest prompts batched first."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    responses: list[str] = [""] * len(prompts)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else PAD_ID
    # seeded here, the caller's random state untouched: the CPU's, and the model's GPU's where it runs
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in chosen)
            ids = torch.full((len(chosen), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for row, i in enumerate(chosen):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     max_new_tokens=max_new_tokens, pad_token_id=pad,
                                     eos_token_id=tokenizer.eos_token_id, **sampling)
            for row, i in enumerate(chosen):
                responses[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
            if advance is not None:
                advance(len(chosen))
    return responses
