"""``full_finetune``: fine-tuning with AdamW on the answer-only loss ``L(θ, z)`` (docs/definitions.md § Data).

Each optimizer step takes ``batch_size × gradient_accumulation`` examples; its loss is the mean
of their ``L`` (the mean answer NLL of the training sequence, as the valuators define it),
accumulated over micro-batches of ``batch_size`` (or ``micro_batch_size``, which changes only
memory: :mod:`~dvbench.harness.lm.batching`). The gradient's norm is clipped to
``max_grad_norm``, then ``torch.optim.AdamW`` steps (betas 0.9 and 0.999, eps 1e-8,
``weight_decay``; with 0 it is Adam). The learning rate warms up linearly over
``ceil(warmup_ratio × steps)`` steps and then stays constant or decays linearly or by a cosine to
0: the formulas of transformers' ``get_scheduler``, which the tests compare against. Examples are
shuffled each epoch by a generator seeded with ``(seed, epoch)``. Dropout stays off (the model
is in eval mode), so a run is deterministic. A bfloat16 or float16 model trains with float32
master weights: AdamW steps float32 copies of the trainable parameters (their gradients summed
in float32 over the micro-batches), which are rounded into the model after each step, so updates
smaller than the half-precision weights' resolution accumulate instead of being lost.

Checkpoints: every ``checkpoint_every`` steps, the trainable parameters and the optimizer's state
are written to ``task.work`` as ``checkpoint-<step>.safetensors``, and then ``checkpoint.json``
names that file, each with its hash (:class:`~dvbench.harness.work.WorkFiles`): a half-written
or damaged checkpoint is never resumed from. A rerun
resumes from the last checkpoint and, on CPU, ends bit for bit where an uninterrupted run would.
Once the model is saved, the checkpoints are deleted.
The model is saved with ``save_pretrained`` into a partial folder that is renamed to
``task.out`` when complete, with ``training.json`` (the loss and learning rate of every step).
With ``trainable`` set, only the trained parameters are saved, over a record of the base model
(:func:`~dvbench.harness.lm.models.save_partial`): the folder loads like any model folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Literal

import numpy as np
from pydantic import Field

from dvbench.harness.artifacts import json_text, read_safetensors, write_safetensors
from dvbench.harness.config import Config
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.lm.batching import BatchSize, Sizes
from dvbench.harness.lm.models import load_model, quiet_bars, save_partial
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.records import ModelRef, TrainedModel, TrainingTask
from dvbench.harness.roles import Trainer
from dvbench.harness.work import WorkFiles

STATE = ("exp_avg", "exp_avg_sq", "step")  # AdamW's state per parameter
POINTER = "checkpoint.json"  # names the last complete checkpoint


class FullFinetune(Trainer):
    """Fine-tunes every parameter (or those matching ``trainable``) with AdamW."""

    name = "full_finetune"
    version = "1.0.1"

    class Config(Config):
        learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate.")
        epochs: int = Field(1, ge=1, description="Passes over the subset.")
        batch_size: int = Field(8, ge=1, description="An optimizer step takes `batch_size × "
                                                     "gradient_accumulation` examples, `batch_size` per forward "
                                                     "and backward unless `micro_batch_size` says otherwise.")
        gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
        micro_batch_size: BatchSize | None = Field(
            None, description="Examples per forward and backward, if not `batch_size`: memory only, the steps "
                              "and their loss stay those of `batch_size × gradient_accumulation`. `auto`: a "
                              "whole step at first on a GPU, halved while out of memory (the CPU: "
                              "`batch_size`); the size used is in the model's metrics.")
        schedule: Literal["constant", "linear", "cosine"] = Field(
            "cosine", description="The learning rate after warm-up: constant, or decaying linearly or by a cosine "
                                  "to 0.")
        warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of the steps (rounded up) with a linear "
                                                                 "warm-up; as in transformers, its first step has "
                                                                 "rate 0, so a one-step training with warm-up does "
                                                                 "not move.")
        weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay (0: Adam).")
        max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient's norm to this; `null`: no "
                                                                   "clipping.")
        trainable: str | None = Field(None, description="Train only the parameters whose name matches this "
                                                        "regular expression (`re.search`), e.g. `mlp` to fit a CPU "
                                                        "budget, and save only those; unset: all.")
        checkpoint_every: int = Field(50, ge=1, description="Optimizer steps between checkpoints.")

    def train(self, task: TrainingTask) -> TrainedModel:
        import torch

        if not task.examples:
            raise InputError("full_finetune: the subset to train on is empty")
        model, tokenizer = load_model(task.model)
        encoder = Encoder(tokenizer, task.template)
        sequences = [encoder.training(z) for z in task.examples]
        params = self.trainable(model)
        masters = _masters(params)
        optimizer = torch.optim.AdamW(masters.values(), lr=self.config.learning_rate,
                                      weight_decay=self.config.weight_decay)
        plan = self.plan(len(sequences), task.seed)
        files = WorkFiles(task.work, task.log)
        done, log = _resume(files, masters, optimizer)
        _round_into(params, masters)
        started, tokens = time.perf_counter(), 0
        micro = self.config.micro_batch_size or self.config.batch_size
        sizes = Sizes({"micro_batch_size": (micro, self.config.batch_size,
                                            self.config.batch_size * self.config.gradient_accumulation)},
                      device=task.model.device, what="trainers.full_finetune", log=task.log)
        with task.progress.task("fine-tune", len(plan), "steps") as advance:
            advance(done)
            for step in range(done, len(plan)):
                for group in optimizer.param_groups:
                    group["lr"] = self.config.learning_rate * self.rate(step, len(plan))
                loss = self.step(model, [sequences[i] for i in plan[step]], optimizer, params, masters, sizes)
                tokens += sum(len(sequences[i].ids) for i in plan[step])
                log.append({"step": step + 1, "lr": optimizer.param_groups[0]["lr"], "loss": loss})
                advance(1, f"loss {loss:.3f}, {tokens / (time.perf_counter() - started):.0f} tokens/s")
                if (step + 1) % self.config.checkpoint_every == 0 and step + 1 < len(plan):
                    _checkpoint(files, step + 1, masters, optimizer, log)
        _save(model, tokenizer, task.out, log, None if self.config.trainable is None else (task.model, params))
        _clear(files)
        return TrainedModel(ModelRef(str(task.out), dtype=task.model.dtype, threads=task.model.threads,
                                     device=task.model.device),
                            task.model, self.name, self.version, self.provenance()["config"],
                            {"steps": len(plan), "loss_first": log[0]["loss"], "loss_last": log[-1]["loss"],
                             "micro_batch_size": sizes["micro_batch_size"]})

    def trainable(self, model) -> dict:
        """The parameters to train, by name; every other parameter is frozen."""
        import re

        pattern = None if self.config.trainable is None else re.compile(self.config.trainable)
        chosen = {}
        for name, p in model.named_parameters():
            p.requires_grad_(pattern is None or bool(pattern.search(name)))
            if p.requires_grad:
                chosen[name] = p
        if not chosen:
            raise InputError(f"full_finetune: no parameter matches trainable={self.config.trainable!r}; "
                             f"names are like {next(iter(dict(model.named_parameters())))}")
        return chosen

    def plan(self, count: int, seed: int) -> list[list[int]]:
        """The examples of every optimizer step: each epoch a fresh permutation, cut into steps."""
        size = self.config.batch_size * self.config.gradient_accumulation
        steps = []
        for epoch in range(self.config.epochs):
            order = np.random.default_rng([seed, epoch]).permutation(count).tolist()
            steps += [order[i:i + size] for i in range(0, count, size)]
        return steps

    def rate(self, step: int, total: int) -> float:
        """The learning rate's multiplier at ``step`` (0-based) of ``total``."""
        warmup = math.ceil(self.config.warmup_ratio * total)
        if step < warmup:
            return step / max(1, warmup)
        if self.config.schedule == "constant":
            return 1.0
        if self.config.schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def step(self, model, sequences, optimizer, params: dict, masters: dict, sizes: Sizes) -> float:
        """One optimizer step on ``sequences``: their mean ``L``, in micro-batches of
        ``sizes["micro_batch_size"]`` (backing off when one runs out of memory, the step's
        gradient summed again from zero), stepping ``masters`` (:func:`_masters`). Returns the loss."""
        import torch

        total = sizes.run(lambda _: _accumulate(model, sequences, optimizer, params, masters,
                                                sizes["micro_batch_size"]))
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(masters.values()), self.config.max_grad_norm)
        optimizer.step()
        _round_into(params, masters)
        return total / len(sequences)


def _accumulate(model, sequences, optimizer, params: dict, masters: dict, micro: int) -> float:
    """The gradient of ``sequences``' mean ``L`` in ``masters``' ``.grad`` (summed in float32
    over micro-batches of ``micro`` where the masters are float32 copies), from zero; returns
    the sum of their ``L``."""
    from dvbench.harness.lm.loglik import answer_losses, collate

    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    for p in params.values():  # a half-done try's gradients, where the masters are copies
        p.grad = None
    total = 0.0
    for start in range(0, len(sequences), micro):
        batch = collate(sequences[start:start + micro], "right", device)
        losses = answer_losses(model, batch)
        (losses.sum() / len(sequences)).backward()
        total += float(losses.detach().sum())
        if masters is not params:  # each micro-batch's gradient summed in float32
            for name, p in params.items():
                grad, p.grad = p.grad.to(masters[name].dtype), None
                masters[name].grad = grad if masters[name].grad is None else masters[name].grad.add_(grad)
    return total


def _masters(params: dict) -> dict:
    """What AdamW steps: float32 copies of half-precision (bfloat16, float16) parameters;
    ``params`` themselves when they are float32 or float64."""
    import torch

    if all(p.dtype not in (torch.bfloat16, torch.float16) for p in params.values()):
        return params
    return {name: p.detach().float().requires_grad_(True) for name, p in params.items()}


def _round_into(params: dict, masters: dict) -> None:
    """The model's parameters set to their master weights, rounded to the model's dtype."""
    import torch

    if masters is not params:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(masters[name])


def _checkpoint(files: WorkFiles, step: int, params: dict, optimizer, log: list) -> None:
    """The stepped parameters (the master weights, where kept) and AdamW's state after ``step``,
    then the pointer to them."""
    if files.folder is None:
        return
    tensors = {f"param.{name}": p.detach() for name, p in params.items()}
    for name, p in params.items():
        for key in STATE:
            tensors[f"{key}.{name}"] = optimizer.state[p][key]
    name = f"checkpoint-{step}.safetensors"
    files.write(name, lambda tmp: write_safetensors(tmp, tensors))
    record = json_text({"step": step, "file": name, "log": log})
    files.write(POINTER, lambda tmp: tmp.write_text(record, encoding="utf-8"))
    for old in files.folder.glob("checkpoint-*.safetensors"):
        if old.name != name:
            files.remove(old.name)


def _resume(files: WorkFiles, params: dict, optimizer) -> tuple[int, list]:
    """Load the last checkpoint into ``params`` and ``optimizer``; the steps done and their log
    (0 and an empty log without one, or when a checkpoint file is not as written)."""
    import torch

    record = files.read(POINTER, lambda path: json.loads(path.read_text(encoding="utf-8")))
    tensors = None if record is None else files.read(record["file"], read_safetensors)
    if tensors is None:
        return 0, []
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param.{name}"])
            # the moments beside their parameter; "step" stays a CPU scalar, as AdamW keeps it
            optimizer.state[p] = {key: tensors[f"{key}.{name}"].to(p.device if key != "step" else "cpu")
                                  for key in STATE}
    return record["step"], record["log"]


def _clear(files: WorkFiles) -> None:
    """Checkpoints are for resuming; once the model is saved they are dropped."""
    if files.folder is not None:
        for path in [*files.folder.glob("checkpoint-*.safetensors"), files.folder / POINTER]:
            files.remove(path.name)


def _save(model, tokenizer, out, log: list, changed: tuple | None) -> None:
    """The fine-tuned model in ``out``, complete or absent: built beside it, then renamed. With
    ``changed = (base, params)`` only the trained parameters are saved, over the base model."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with quiet_bars():
        if changed is None:
            model.save_pretrained(partial)
        else:
            save_partial(partial, changed[0], {name: p.detach() for name, p in changed[1].items()})
        tokenizer.save_pretrained(partial)
    (partial / "training.json").write_text(json_text(log, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)


@hookimpl
def dvbench_register_trainers(register):
    register(FullFinetune)
