"""full_finetune against a literal loop: torch.optim.AdamW and transformers' get_scheduler on a deep
copy, one unpadded sequence at a time; and interrupted training resumed bit for bit."""

import copy
import math

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from dvbench.harness.data.generated import generate
from dvbench.harness.lm.models import load_model
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, TrainingTask
from dvbench.harness.testing import out_of_memory_above, reference_logprobs
from dvbench.plugins.trainers import full_finetune
from dvbench.plugins.trainers.full_finetune import FullFinetune

EXAMPLES = generate(10, 0, 0, seed=4)["candidates"]


def _task(tiny_model_dir, out, work=None, seed=7):
    return TrainingTask(ModelRef(str(tiny_model_dir), dtype="float64"), EXAMPLES, out, seed=seed,
                        template=Template(name="plain"), work=work)


def _trainer(**config):
    base = dict(learning_rate=1e-2, epochs=2, batch_size=3, gradient_accumulation=2, warmup_ratio=0.3)
    return FullFinetune(FullFinetune.Config(**{**base, **config}))


def _literal(tiny_model_dir, trainer, seed):
    """AdamW stepped by hand: each step's examples in the documented order, each loss from the
    model's own unpadded forward, the learning rate from transformers' scheduler."""
    model, tokenizer = load_model(ModelRef(str(tiny_model_dir), dtype="float64"))
    model = copy.deepcopy(model)
    encoder = Encoder(tokenizer, Template(name="plain"))
    config = trainer.config
    size = config.batch_size * config.gradient_accumulation
    steps = []
    for epoch in range(config.epochs):
        order = list(np.random.default_rng([seed, epoch]).permutation(len(EXAMPLES)))
        steps += [order[i:i + size] for i in range(0, len(order), size)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    name = {"constant": "constant_with_warmup"}.get(config.schedule, config.schedule)  # transformers' names
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * len(steps)),
                              num_training_steps=len(steps))
    for chosen in steps:
        optimizer.zero_grad()
        loss = sum(-reference_logprobs(model, encoder.training(EXAMPLES[i])).mean() for i in chosen) / len(chosen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
    return dict(model.named_parameters())


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_equals_adamw_with_transformers_schedule(tiny_model_dir, tmp_path, schedule):
    trainer = _trainer(schedule=schedule, weight_decay=0.1 if schedule == "cosine" else 0.0)
    trained = trainer.train(_task(tiny_model_dir, tmp_path / "model"))
    ours = dict(load_model(trained.model)[0].named_parameters())
    expected = _literal(tiny_model_dir, trainer, seed=7)
    base = dict(load_model(ModelRef(str(tiny_model_dir), dtype="float64"))[0].named_parameters())
    assert set(ours) == set(expected)
    for name, p in ours.items():
        assert not torch.equal(p, base[name]), f"{name} did not move"
        torch.testing.assert_close(p, expected[name], rtol=1e-9, atol=1e-12)
    assert trained.metrics["steps"] == 4 and trained.base == _task(tiny_model_dir, None).model


def test_trainable_pattern_freezes_the_rest(tiny_model_dir, tmp_path):
    trained = _trainer(trainable=r"mlp\.down_proj").train(_task(tiny_model_dir, tmp_path / "model"))
    ours = dict(load_model(trained.model)[0].named_parameters())
    base = dict(load_model(ModelRef(str(tiny_model_dir), dtype="float64"))[0].named_parameters())
    moved = {name for name in ours if not torch.equal(ours[name], base[name])}
    assert moved == {name for name in ours if "mlp.down_proj" in name}
    saved = {p.name for p in (tmp_path / "model").iterdir()}  # only the trained tensors, over the base
    assert {"dvbench-partial.json", "changed.safetensors"} <= saved and "model.safetensors" not in saved
    with pytest.raises(ValueError, match="no parameter matches trainable='nothing'"):
        _trainer(trainable="nothing").train(_task(tiny_model_dir, tmp_path / "other"))


def test_interrupted_training_resumes_bit_for_bit(tiny_model_dir, tmp_path, monkeypatch):
    whole = _trainer(checkpoint_every=1).train(_task(tiny_model_dir, tmp_path / "whole"))
    expected = dict(load_model(whole.model)[0].named_parameters())

    real_step, calls = FullFinetune.step, []

    def dies_at_the_third_step(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(FullFinetune, "step", dies_at_the_third_step)
    task = _task(tiny_model_dir, tmp_path / "resumed", work=tmp_path / "work")
    with pytest.raises(KeyboardInterrupt):
        _trainer(checkpoint_every=1).train(task)
    assert not task.out.exists() and (tmp_path / "work/checkpoint.json").is_file()
    assert [p.name for p in (tmp_path / "work").glob("*.safetensors")] == ["checkpoint-2.safetensors"]

    monkeypatch.setattr(FullFinetune, "step", real_step)
    steps = []
    monkeypatch.setattr(FullFinetune, "step", lambda self, *a: steps.append(1) or real_step(self, *a))
    resumed = _trainer(checkpoint_every=1).train(task)
    assert len(steps) == 2  # steps 3 and 4 only
    assert not list((tmp_path / "work").iterdir())  # checkpoints dropped once the model is saved
    for name, p in load_model(resumed.model)[0].named_parameters():
        assert torch.equal(p, expected[name]), name
    assert full_finetune.json.loads((task.out / "training.json").read_text()) == \
        full_finetune.json.loads((tmp_path / "whole/training.json").read_text())


def test_empty_subset_is_refused(tiny_model_dir, tmp_path):
    task = TrainingTask(ModelRef(str(tiny_model_dir)), (), tmp_path / "m")
    with pytest.raises(ValueError, match="subset to train on is empty"):
        _trainer().train(task)


def _change(model, base) -> torch.Tensor:
    return torch.cat([(p.double() - base[name].double()).flatten() for name, p in model.named_parameters()])


def test_half_precision_steps_float32_master_weights(tiny_model_dir, tmp_path):
    """A bfloat16 model against a literal mixed-precision loop: AdamW on float32 copies of the
    weights, each step's result rounded into the bfloat16 model. The learning rate is below half
    the weights' bfloat16 resolution, so AdamW on the bfloat16 weights themselves would leave
    almost all of them where they were."""
    trainer = _trainer(learning_rate=2e-5, epochs=3, batch_size=2, gradient_accumulation=1, warmup_ratio=0.0,
                       schedule="constant", max_grad_norm=None)
    bf16 = ModelRef(str(tiny_model_dir), dtype="bfloat16")
    trained = trainer.train(TrainingTask(bf16, EXAMPLES, tmp_path / "model", seed=7, template=Template(name="plain")))
    base = dict(load_model(bf16)[0].named_parameters())

    model, tokenizer = load_model(bf16)
    model = copy.deepcopy(model)
    encoder = Encoder(tokenizer, Template(name="plain"))
    params = list(model.parameters())
    masters = [p.detach().float().requires_grad_(True) for p in params]
    optimizer = torch.optim.AdamW(masters, lr=2e-5, weight_decay=0.0)
    for epoch in range(3):
        order = list(np.random.default_rng([7, epoch]).permutation(len(EXAMPLES)))
        for chosen in [order[i:i + 2] for i in range(0, len(order), 2)]:
            model.zero_grad()
            loss = sum(-reference_logprobs(model, encoder.training(EXAMPLES[i])).mean() for i in chosen) / len(chosen)
            loss.backward()
            for master, p in zip(masters, params):
                master.grad = p.grad.float()
            optimizer.step()
            with torch.no_grad():
                for master, p in zip(masters, params):
                    p.copy_(master)
    expected = _change(model, base)

    ours = _change(load_model(trained.model)[0], base)
    assert expected.count_nonzero() > 0.5 * expected.numel()  # the literal loop moved most weights
    assert (ours - expected).norm() / expected.norm() < 0.2



@pytest.mark.parametrize("micro", [2, "auto"])
def test_micro_batches_and_their_back_off_change_no_step(tiny_model_dir, tmp_path, monkeypatch, micro):
    """Steps of 6 examples in micro-batches of 2, or ``auto`` on a device that runs out of memory
    above 2 rows (3, the CPU's start, backs off to 1): the literal loop's steps either way."""
    real, lines = full_finetune.load_model, []

    def small_device(ref):
        model, tokenizer = real(ref)
        out_of_memory_above(model, 2)
        return model, tokenizer

    monkeypatch.setattr(full_finetune, "load_model", small_device)
    trainer = _trainer(micro_batch_size=micro)
    task = _task(tiny_model_dir, tmp_path / "model")
    trained = trainer.train(TrainingTask(task.model, task.examples, task.out, seed=task.seed, template=task.template,
                                         log=lines.append))
    monkeypatch.setattr(full_finetune, "load_model", real)
    expected = _literal(tiny_model_dir, trainer, seed=7)
    for name, p in load_model(trained.model)[0].named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-9, atol=1e-12)
    assert trained.metrics["micro_batch_size"] == (2 if micro == 2 else 1)
    assert lines == ([] if micro == 2 else
                     ["trainers.full_finetune: out of memory on cpu; running the unit again at micro_batch_size 1"])
