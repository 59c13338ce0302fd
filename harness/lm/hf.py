"""The adapter to transformers' model internals: every use of them in dvbench is here (loading,
in :mod:`~dvbench.harness.lm.models`, and generation, in :mod:`~dvbench.harness.lm.generate`,
use only transformers' public entry points).

dvbench runs a causal LM's transformer body and its output head separately (the head only at
answer positions), and shares a prefix's keys and values across continuations. That needs:

- :func:`body`: the body's last hidden states for given ids, attention mask and position ids,
  optionally continuing from a cache of earlier keys and values; :func:`hidden_states`: every
  layer's;
- :func:`head`: the output head (the output embedding), and :func:`check_model`, which refuses
  models whose logits are not that head applied to the last hidden state;
- :func:`prefix_keys_values` and :func:`gathered_cache`: a batch of prefixes' keys and values,
  per layer, and a fresh cache holding, row by row, the prefix of each continuation;
- :func:`checkpointed_blocks`: every transformer block under activation checkpointing, in any
  mode (transformers' own checkpointing acts in training mode only).

Written against transformers 5.24's cache API (the ``cache=`` keyword and ``output.cache``,
``DynamicCache(ddp_cache_data, config)``, ``cache.layers[i].keys``), which pyproject pins the
range to. The cached path is tested against the uncached forward (tests/harness/lm/test_hf.py).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from contextlib import contextmanager
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from dvbench.harness.errors import InputError

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (batch, heads, length, head_dim) each


def check_model(model) -> None:
    """Refuse models whose logits are not ``output_embeddings(last hidden state)``."""
    config = model.config
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(config, key, None) not in (None, 1, 1.0):
            raise InputError(f"model {config.model_type!r} sets {key}; dvbench's answer-only "
                             f"log-likelihoods do not support it")


def head(model) -> torch.nn.Module:
    """The output head: a linear map from the last hidden state to the vocabulary's logits."""
    return model.get_output_embeddings()


def body(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache=None) -> torch.Tensor:
    """The transformer body's last hidden states, ``(batch, length, hidden)``. ``mask`` covers the
    cached keys and then ``ids``; ``cache`` (from :func:`gathered_cache`) is read, not kept."""
    if cache is None:
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    else:
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    return out.last_hidden_state


def hidden_states(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every layer's hidden states, ``(batch, length, hidden)`` each: the token embeddings first,
    then each block's output (the last as the body returns it)."""
    out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                           output_hidden_states=True)
    return out.hidden_states


def prefix_keys_values(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> KeysValues:
    """Every layer's keys and values for a batch of (left-padded) prefixes."""
    out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return [(layer.keys, layer.values) for layer in out.cache.layers]


def gathered_cache(model, layers: KeysValues, rows: Seq[int] | torch.Tensor):
    """A fresh cache holding, for batch row ``r``, the keys and values of prefix ``rows[r]`` of
    ``layers`` (an expanded view when every row shares one prefix)."""
    from transformers import DynamicCache

    rows = torch.as_tensor(rows, device=layers[0][0].device)
    one = bool((rows == rows[0]).all())

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[rows[:1]].expand(len(rows), -1, -1, -1) if one else t[rows]

    return DynamicCache(ddp_cache_data=[(pick(k), pick(v)) for k, v in layers], config=model.config)


def blocks(model) -> torch.nn.ModuleList:
    """The transformer's block list: the body's first ``ModuleList`` (Llama's ``layers``, GPT-2's ``h``)."""
    found = next((m for m in model.base_model.children() if isinstance(m, torch.nn.ModuleList)), None)
    if found is None:
        raise InputError(f"model {model.config.model_type!r} has no list of transformer blocks dvbench can find")
    return found


@contextmanager
def checkpointed_blocks(model):
    """While active, each block's forward under autograd saves only the block's inputs for the
    backward, which runs the block's forward again (non-reentrant :func:`torch.utils.checkpoint.checkpoint`,
    recomputing the whole block: module hooks inside it run twice, in the forward and in the
    backward): a backward holds one block's activations, not every block's."""
    layers = list(blocks(model))
    for layer in layers:
        layer.forward = partial(checkpoint, layer.forward, use_reentrant=False)
    try:
        with set_checkpoint_early_stop(False):  # the recompute runs the block to its end: every hook fires
            yield
    finally:
        for layer in layers:
            del layer.forward  # the class's forward again
