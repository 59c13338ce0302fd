"""The runner's training and evaluation stages: fine-tune on every selected subset, measure
every fine-tuned model.

For each training entry, selection entry, valuator and subset (a score bin, a top-k), the
trainer fine-tunes the spec's model on the subset's candidates. A model is named after what
produced it (trainer, config, base model, template, seed, the subset's examples), so equal
subsets (a random selection is the same for every valuator) are trained once, and a finished
model is reused by the next run:

    models/<trainer>-<key>/            the fine-tuned model (save_pretrained), complete or absent
    models/<trainer>-<key>.json        its producer
    work/<trainer>-<key>/              the trainer's checkpoints; an interrupted training resumes
    training/<trainer>.parquet         selection, valuator, subset, model, examples, steps, losses
    evaluations/<evaluator>/<model>.metrics.json   an evaluator's metrics for one model, reused if unchanged
    evaluations/<evaluator>.parquet    trainer, selection, valuator, subset, model, eval_subset,
                                       metric, value (eval_subset "all": the whole eval set)
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

from dvbench.harness.artifacts import ArtifactStore, canonical, fingerprint
from dvbench.harness.template import Template
from dvbench.harness.progress import Progress
from dvbench.harness.records import EvalTask, Example, ModelRef, Selection, TrainedModel, TrainingTask
from dvbench.harness.spec import Spec

TRAINING_SCHEMA = {"selection": pl.String, "valuator": pl.String, "subset": pl.String, "model": pl.String,
                   "examples": pl.Int64, "steps": pl.Int64, "loss_first": pl.Float64, "loss_last": pl.Float64}
EVALUATION_SCHEMA = {"trainer": pl.String, "selection": pl.String, "valuator": pl.String, "subset": pl.String,
                     "model": pl.String, "eval_subset": pl.String, "metric": pl.String, "value": pl.Float64}


class FineTuning:
    """Training and evaluation for one run; ``inputs`` names the base model, template and seed."""

    def __init__(self, spec: Spec, store: ArtifactStore, progress: Progress, log, inputs: dict):
        self.spec, self.store, self.progress, self.log, self.inputs = spec, store, progress, log, inputs

    @property
    def base(self) -> ModelRef:
        return self.spec.settings.model.ref()

    @property
    def template(self) -> Template:
        return self.spec.settings.template.template()

    def train(self, candidates: tuple[Example, ...], selections: dict[str, dict[str, Selection]],
              advance) -> dict[str, dict[tuple[str, str, str], str]]:
        """Fine-tune on every subset; ``{trainer label: {(selection, valuator, subset): model name}}``."""
        by_id = {c.id: c for c in candidates}
        out: dict[str, dict[tuple[str, str, str], str]] = {}
        for use in self.spec.trainers.values():
            rows, names, empty = [], {}, {}
            for selection in self.spec.trained_selections(use):
                for valuator, chosen in selections[selection].items():
                    for subset, ids in chosen.subsets.items():
                        if not ids:
                            empty.setdefault(f"{selection}/{subset}", []).append(valuator)
                            continue
                        examples = tuple(by_id[i] for i in ids)
                        name, trained = self._model(use, examples)
                        names[(selection, valuator, subset)] = name
                        rows.append({"selection": selection, "valuator": valuator, "subset": subset, "model": name,
                                     "examples": len(examples), **{k: trained.get(k) for k in
                                                                   ("steps", "loss_first", "loss_last")}})
            for subset, valuators in empty.items():
                self.log(f"training/{use.label}: {subset} is empty for {', '.join(valuators)}; not trained")
            frame = pl.DataFrame(rows, schema=TRAINING_SCHEMA)
            self.store.save(f"training/{use.label}", {"models": sorted(set(names.values()))},
                            {".parquet": frame.write_parquet})
            out[use.label] = names
            advance(1)
        return out

    def _model(self, use, examples: tuple[Example, ...]) -> tuple[str, dict]:
        """The fine-tuned model's name and metrics: saved if its producer matches, else trained."""
        producer = {**use.plugin.provenance(), **self.inputs, "examples": fingerprint(examples),
                    "count": len(examples)}
        name = f"{use.label}-{hashlib.sha256(canonical(producer).encode()).hexdigest()[:16]}"
        folder = self.store.root / "models" / name
        files, _ = self.store.find(f"models/{name}", producer)
        if files is not None and folder.is_dir():
            return name, json.loads(files[".metrics.json"].read_text(encoding="utf-8"))
        task = TrainingTask(self.base, examples, folder, seed=self.spec.settings.seed, template=self.template,
                            progress=self.progress, work=self.store.root / "work" / name)
        trained: TrainedModel = use.plugin.train(task)
        metrics = dict(trained.metrics)
        self.store.save(f"models/{name}", producer,
                        {".metrics.json": lambda tmp: tmp.write_text(json.dumps(metrics) + "\n", encoding="utf-8")})
        return name, metrics

    def evaluate(self, eval_set: tuple[Example, ...], trained: dict[str, dict[tuple[str, str, str], str]],
                 advance) -> dict[str, pl.DataFrame]:
        """Every evaluator on every fine-tuned model: one long frame per evaluator."""
        frames = {}
        for use in self.spec.evaluators.values():
            results: dict[str, dict[str, dict[str, float]]] = {}
            rows = []
            for trainer, names in trained.items():
                for (selection, valuator, subset), name in names.items():
                    if name not in results:
                        results[name] = self._evaluation(use, name, eval_set)
                    for eval_subset, metrics in results[name].items():
                        rows += [{"trainer": trainer, "selection": selection, "valuator": valuator, "subset": subset,
                                  "model": name, "eval_subset": eval_subset, "metric": metric, "value": value}
                                 for metric, value in metrics.items()]
            frame = pl.DataFrame(rows, schema=EVALUATION_SCHEMA)
            self.store.save(f"evaluations/{use.label}", {"models": sorted(results)}, {".parquet": frame.write_parquet})
            frames[use.label] = frame
            advance(1)
        return frames

    def _evaluation(self, use, name: str, eval_set: tuple[Example, ...]) -> dict[str, dict[str, float]]:
        """``{"all": metrics, <subset>: metrics}`` of one model: saved if unchanged, else measured."""
        producer = {**use.plugin.provenance(), **self.inputs, "model": name, "eval": fingerprint(eval_set)}
        artifact = f"evaluations/{use.label}/{name}"
        files, _ = self.store.find(artifact, producer)
        if files is not None:
            return json.loads(files[".metrics.json"].read_text(encoding="utf-8"))
        model = ModelRef(str(self.store.root / "models" / name), dtype=self.base.dtype, threads=self.base.threads)
        result = use.plugin.evaluate(EvalTask(model, self.base, eval_set, seed=self.spec.settings.seed,
                                              template=self.template, progress=self.progress))
        metrics = {"all": dict(result.metrics), **{k: dict(v) for k, v in result.by_subset.items()}}
        self.store.save(artifact, producer, {".metrics.json": lambda tmp: tmp.write_text(json.dumps(metrics, indent=1) + "\n")})
        return metrics
