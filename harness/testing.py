"""Contract checks and pytest fixtures for plugin authors: call the checks from your plugin's
own tests, and load the fixtures with one line in your top-level ``conftest.py``.

    # conftest.py
    pytest_plugins = ["dvbench.harness.testing"]

    # test_my_valuator.py
    from dvbench.harness.testing import check_valuator
    def test_contract(tiny_valuation_task):
        check_valuator(MyValuator, task=tiny_valuation_task)

Fixtures: ``tiny_model_dir`` (a folder holding :func:`tiny_lm` and its tokenizer, once per
session), ``tiny_model`` (the :class:`~dvbench.harness.records.ModelRef` of that folder) and
``tiny_valuation_task`` (:func:`tiny_task` on that model). torch loads only when a test asks
for the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from dvbench.harness.config import Config
from dvbench.harness.data.generated import generate
from dvbench.harness.plugins import check_plugin_class
from dvbench.harness.records import ModelRef, Scores, Selection, ValuationTask
from dvbench.harness.roles import Plugin, Selector, Valuator


def tiny_task(candidates: int = 24, anchors: int = 4, seed: int = 0, model: ModelRef | None = None) -> ValuationTask:
    """A small valuation task on dvbench's generated data, with ``model`` (default: the embedded
    model) named."""
    data = generate(candidates, anchors, 0, seed=seed)
    return ValuationTask(data["candidates"], data["anchors"], model or ModelRef("embedded"), seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder holding :func:`tiny_lm` (float32) and its tokenizer, saved once per session: a model
    any spec or :class:`~dvbench.harness.records.ModelRef` can name, in place of the embedded one."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    from dvbench.harness.lm.models import quiet_bars

    model, tokenizer = tiny_lm("float32")
    with quiet_bars():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> ModelRef:
    """The :class:`~dvbench.harness.records.ModelRef` of ``tiny_model_dir`` (float32)."""
    return ModelRef(str(tiny_model_dir))


@pytest.fixture
def tiny_valuation_task(tiny_model) -> ValuationTask:
    """:func:`tiny_task` (24 candidates, 4 anchors) on ``tiny_model``: ready for ``score``."""
    return tiny_task(model=tiny_model)


def byte_tokenizer():
    """An in-memory byte-level tokenizer: ids 0-2 are ``<pad>``, ``<s>`` (BOS, added at the start)
    and ``</s>`` (EOS), then one id per byte. No file, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_lm(dtype: str = "float64", seed: int = 0, layers: int = 2):
    """A tiny Llama (hidden size 16, 2 heads, grouped KV) with random weights and
    :func:`byte_tokenizer`: ``(model, tokenizer)``, in eval mode. Small enough for exact checks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    return model, tokenizer


def reference_logprobs(model, sequence):
    """``log p`` of each answer token of one sequence by the model's own forward: unpadded, no
    batching, full-vocabulary logits. The independent reference that exact checks compare with;
    differentiable, so ``-reference_logprobs(...).mean()`` is ``L(θ, x)`` for autograd."""
    import torch

    ids = torch.tensor([sequence.ids], device=next(model.parameters()).device)
    logp = model(ids).logits[0].log_softmax(-1)
    return logp[sequence.answer_start - 1:-1].gather(-1, ids[0, sequence.answer_start:, None])[:, 0]


def out_of_memory_above(model, rows: int):
    """Make ``model`` run out of memory, as a small GPU would, on any forward of more than
    ``rows`` rows: its body raises ``torch.OutOfMemoryError`` first. Returns the hook's handle
    (``.remove()`` it, or use it as a context manager) — to test a role's ``auto`` back-off on the
    CPU (:mod:`dvbench.harness.lm.batching`)."""
    import torch

    def refuse(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory: a forward of {kwargs['input_ids'].shape[0]} rows")

    return model.base_model.register_forward_pre_hook(refuse, with_kwargs=True)


def _instance(cls: type[Plugin], role: str, config: Config | None) -> Plugin:
    check_plugin_class(cls, role, f"{cls.__module__}.{cls.__qualname__}")
    return cls(config)


def check_valuator(cls: type[Valuator], config: Config | None = None, task: ValuationTask | None = None) -> Scores:
    """Assert that ``cls`` fills the valuator contract on ``task`` (default :func:`tiny_task`).

    Checks the class attributes, that scores cover every candidate in order, are stamped with
    the valuator's name, version and config, have a per-anchor matrix of the right shape if any,
    and are identical when computed twice. Returns the scores for further checks.
    """
    task = task or tiny_task()
    valuator = _instance(cls, "valuator", config)
    scores = valuator.score(task)
    assert isinstance(scores, Scores), f"{cls.name}.score returned {type(scores).__name__}, not Scores"
    assert scores.candidate_ids == tuple(c.id for c in task.candidates), "scores must follow the candidates' order"
    assert (scores.valuator, scores.version) == (cls.name, cls.version), "build Scores with self.scores(...)"
    assert dict(scores.config) == valuator.provenance()["config"], "scores must record the valuator's config"
    if scores.per_anchor is not None:
        assert scores.anchor_ids == tuple(a.id for a in task.anchors), "per-anchor rows must follow the anchors"
    again = valuator.score(task)
    assert np.array_equal(scores.values, again.values), f"{cls.name} is not deterministic on the same task"
    return scores


def check_selector(cls: type[Selector], config: Config | None = None, scores: Scores | None = None) -> Selection:
    """Assert that ``cls`` fills the selector contract: subsets of known ids, no repeats, repeatable."""
    if scores is None:
        task = tiny_task()
        values = np.random.default_rng(0).random(len(task.candidates))
        scores = Scores(tuple(c.id for c in task.candidates), values, "check", "0", {})
    selector = _instance(cls, "selector", config)
    selection = selector.select(scores, reference=scores, seed=0)
    assert isinstance(selection, Selection), f"{cls.name}.select returned {type(selection).__name__}"
    pool = set(scores.candidate_ids)
    for name, ids in selection.subsets.items():
        assert set(ids) <= pool, f"subset {name!r} holds ids outside the pool"
        assert len(set(ids)) == len(ids), f"subset {name!r} repeats a candidate"
    assert selector.select(scores, reference=scores, seed=0) == selection, f"{cls.name} is not deterministic"
    return selection
