"""Runs a validated spec stage by stage: data, model, valuation, selection, training, evaluation,
leaderboard.

Artifacts land under the output folder, each with a record of its producer:

    scores/<label>.parquet             candidate_id, score
    scores/<label>.per_anchor.parquet  candidate_id, one column per anchor id (when given)
    scores/<label>.details.npz         the arrays the scores were aggregated from (when given)
    scores/<label>.stats.json          counts the valuator reports: ties, truncations (when given)
    work/<valuator>-<key>/             a valuator's finished shards; key.json says what produced them
    selections/<selector>.parquet      valuator, subset, rank, candidate_id
    models/, training/, evaluations/   fine-tuned models and their metrics (see harness.finetuning)
    leaderboard/<table>.{parquet,csv,md}
    leaderboard/plots/*.png            Spearman heatmap, scatter of two valuators, overlap by percentile
    run.json                           resolved spec, versions, seed, timings per stage

Scores whose record names the same producer (plugin, version, config, data, model, seed) are
reused; any other scores file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from dvbench.harness import __version__, leaderboard, plots, report
from dvbench.harness.artifacts import ArtifactStore, canonical, fingerprint, read_npz, write_npz, write_text_atomic
from dvbench.harness.data.files import load_examples
from dvbench.harness.data.generated import generate
from dvbench.harness.data.hf import load_hub_examples
from dvbench.harness.finetuning import FineTuning
from dvbench.harness.lm import models
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.progress import Advance, Progress
from dvbench.harness.records import Example, Scores, Selection, ValuationTask
from dvbench.harness.spec import Spec, Use


@dataclass(frozen=True)
class Data:
    candidates: tuple[Example, ...]
    anchors: tuple[Example, ...] = ()
    eval: tuple[Example, ...] = ()


@dataclass
class RunResult:
    """What a run produced, in memory, plus where it lies on disk."""

    out: Path
    model: dict = field(default_factory=dict)
    tokens: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, Scores] = field(default_factory=dict)
    selections: dict[str, dict[str, Selection]] = field(default_factory=dict)
    trained: dict[str, dict[tuple[str, str, str], str]] = field(default_factory=dict)
    evaluations: dict[str, pl.DataFrame] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def load_data(spec: Spec) -> Data:
    """The spec's candidates, anchors and eval set."""
    section = spec.settings.data
    if section.generated is not None:
        g = section.generated
        splits = generate(g.candidates, g.anchors, g.eval, defect_fraction=g.defect_fraction,
                          families=tuple(g.families), seed=spec.settings.seed if g.seed is None else g.seed)
        return Data(**splits)
    def examples(source, require_output=True):
        if source is None:
            return ()
        if source.dataset is None:
            return load_examples(source.path, split=source.split, require_output=require_output)
        return load_hub_examples(source.dataset, split=source.split or "train", config=source.config,
                                 revision=source.revision, allow_download=source.allow_download,
                                 require_output=require_output)

    return Data(
        candidates=examples(section.candidates),
        anchors=examples(section.anchors),
        eval=examples(section.eval, require_output=False),
    )


class Runner:
    """Runs one spec into one output folder; ``log`` receives one-line notices."""

    def __init__(self, spec: Spec, out: Path | None = None, progress: Progress | None = None, log=print):
        self.spec = spec
        self.out = Path(out or spec.settings.output_dir or Path("runs") / spec.name)
        self.store = ArtifactStore(self.out)
        self.progress = progress or Progress()
        self.log = log

    def run(self) -> RunResult:
        started = time.time()
        result, data, inputs = self.score()
        with self._stage(result, "selection", len(self.spec.selectors), "selectors") as advance:
            for use in self.spec.selectors.values():
                result.selections[use.label] = self._select(use, result.scores)
                advance(1)
        tuning = FineTuning(self.spec, self.store, self.progress, self.log,
                            {k: inputs[k] for k in ("model", "template", "seed")})
        if self.spec.trainers:
            with self._stage(result, "training", len(self.spec.trainers), "trainers") as advance:
                result.trained = tuning.train(data.candidates, result.selections, advance)
        if self.spec.evaluators:
            with self._stage(result, "evaluation", len(self.spec.evaluators), "evaluators") as advance:
                result.evaluations = tuning.evaluate(data.eval, result.trained, advance)
        with self._stage(result, "leaderboard") as advance:
            result.tables = self._leaderboard(data, result.scores, result.selections, result.evaluations)
            advance(1)
        self._write_run_json(result, started)
        return result

    def score(self) -> tuple[RunResult, Data, dict]:
        """The data, model and valuation stages alone: every valuator's scores (as ``dvbench check
        --golden`` needs them), the data, and what the scores were computed from."""
        result = RunResult(self.out)
        with self._stage(result, "data") as advance:
            data = load_data(self.spec)
            advance(1)
        with self._stage(result, "model") as advance:
            result.model, result.tokens = self._model(data)
            advance(1)
        with self._stage(result, "valuation", len(self.spec.valuators), "valuators") as advance:
            inputs = {"candidates": fingerprint(data.candidates), "anchors": fingerprint(data.anchors),
                      "model": result.model, "template": asdict(self.template), "tracked": self.spec.settings.tracked,
                      "seed": self.spec.settings.seed}
            for use in self.spec.valuators.values():
                result.scores[use.label] = self._scores(use, data, inputs)
                advance(1)
        return result, data, inputs

    @contextmanager
    def _stage(self, result: RunResult, name: str, total: int = 1, unit: str = "steps") -> Iterator[Advance]:
        start = time.perf_counter()
        with self.progress.task(name, total, unit) as advance:
            yield advance
        result.timings[name] = round(time.perf_counter() - start, 3)

    @property
    def template(self) -> Template:
        return self.spec.settings.template.template()

    def _model(self, data: Data) -> tuple[dict, dict[str, dict]]:
        """Resolve the model (converting the embedded one on first use) and tokenize every split
        with the spec's template: the model's identity and each split's token report."""
        ref = self.spec.settings.model.ref()
        resolved = models.resolve(ref)
        self.log(f"model: {resolved.description}")
        encoder = Encoder(models.load_tokenizer(ref), self.template)
        tokens = {}
        for split in ("candidates", "anchors", "eval"):
            examples = getattr(data, split)
            if split == "eval":
                examples = tuple(e for e in examples if e.output)
            if not examples:
                continue
            encoder.truncated.clear()
            lengths = [len(encoder.zero_shot(e).ids) for e in examples]
            tokens[split] = {"examples": len(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1),
                             "max_tokens": max(lengths), "truncated": dict(encoder.truncated)}
            if encoder.truncated:
                cuts = ", ".join(f"{n} {what}" for what, n in sorted(encoder.truncated.items()))
                self.log(f"{split}: cut to fit template limits ({cuts}); see run.json")
        identity = {**asdict(ref), "fingerprint": resolved.fingerprint}
        return identity, tokens

    def _scores(self, use: Use, data: Data, inputs: dict) -> Scores:
        """Saved scores if ``inputs`` (data fingerprints, model, seed) and the valuator match; else
        computed and saved."""
        valuator = use.plugin
        producer = {**valuator.provenance(), **inputs}
        name = f"scores/{use.label}"
        files, why = self.store.find(name, producer)
        if files is not None:
            self.log(f"scores/{use.label}: reusing saved scores ({why})")
            return _read_scores(files, valuator.provenance())
        if why != "not computed yet":
            self.log(f"scores/{use.label}: recomputing, {why}")
        work, key = self._work(valuator, producer)
        task = ValuationTask(data.candidates, data.anchors, self.spec.settings.model.ref(),
                             seed=self.spec.settings.seed, template=self.template, progress=self.progress,
                             work=work, tracked=self.spec.settings.tracked)
        scores = valuator.score(task)
        if work.is_dir():  # the valuator kept work: say what produced it
            write_text_atomic(work / "key.json", json.dumps(key, indent=2, sort_keys=True) + "\n")
        if scores.candidate_ids != tuple(c.id for c in data.candidates):
            raise RuntimeError(f"valuator {use.label!r} ({valuator.name}) returned scores for another pool")
        writers = {".parquet": pl.DataFrame({"candidate_id": scores.candidate_ids,
                                             "score": scores.values}).write_parquet}
        if scores.per_anchor is not None:
            matrix = pl.DataFrame({"candidate_id": scores.candidate_ids,
                                   **dict(zip(scores.anchor_ids, scores.per_anchor))})
            writers[".per_anchor.parquet"] = matrix.write_parquet
        if scores.details:
            writers[".details.npz"] = lambda tmp: write_npz(tmp, scores.details)
        if scores.stats:
            writers[".stats.json"] = lambda tmp: tmp.write_text(json.dumps(dict(scores.stats), indent=2) + "\n")
            self.log(f"scores/{use.label}: " + ", ".join(f"{k} {v}" for k, v in scores.stats.items()))
        self.store.save(name, producer, writers)
        return scores

    def _work(self, valuator, producer: dict) -> tuple[Path, dict]:
        """The valuator's work folder and what names it: its producer, less the config keys that
        only change the aggregation, so entries differing only in those share it."""
        config = {k: v for k, v in producer["config"].items() if k not in valuator.derived}
        key = {**producer, "config": config}
        return self.out / "work" / f"{valuator.name}-{hashlib.sha256(canonical(key).encode()).hexdigest()[:16]}", key

    def _select(self, use: Use, scores: dict[str, Scores]) -> dict[str, Selection]:
        reference = scores[use.reference] if use.reference else None
        seed = self.spec.settings.seed
        chosen = {label: use.plugin.select(s, reference=reference or s, seed=seed) for label, s in scores.items()}
        rows = [{"valuator": label, "subset": subset, "rank": rank, "candidate_id": cid}
                for label, selection in chosen.items()
                for subset, ids in selection.subsets.items()
                for rank, cid in enumerate(ids)]
        frame = pl.DataFrame(rows, schema={"valuator": pl.String, "subset": pl.String,
                                           "rank": pl.Int64, "candidate_id": pl.String})
        producer = {**use.plugin.provenance(), "reference": use.reference, "seed": seed,
                    "scores": {label: self.store.producer(f"scores/{label}") for label in scores}}
        self.store.save(f"selections/{use.label}", producer, {".parquet": frame.write_parquet})
        return chosen

    def _leaderboard(self, data: Data, scores: dict[str, Scores], selections: dict[str, dict[str, Selection]],
                     evaluations: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
        frame = leaderboard.scores_frame(scores)
        tables = {
            "spearman": leaderboard.spearman(frame),
            "overlap": leaderboard.overlap(frame, self.spec.settings.leaderboard.overlap_fractions),
        }
        if sum(s.per_anchor is not None for s in scores.values()) >= 2:
            tables["spearman_per_anchor"] = leaderboard.spearman_per_anchor(scores)
        if any("defect" in c.meta for c in data.candidates):
            tables["defect_auc"] = leaderboard.defect_auc(frame, [c.meta.get("defect") not in (None, "", False, 0)
                                                                  for c in data.candidates])
        if selections:
            tables["selection_overlap"] = leaderboard.selection_overlap(selections)
        for label, frame in evaluations.items():
            tables[f"evaluation_{label}"] = leaderboard.evaluation(frame)
        producer = {"scores": {label: self.store.producer(f"scores/{label}") for label in scores},
                    "selections": {label: self.store.producer(f"selections/{label}") for label in selections},
                    "evaluations": {label: self.store.producer(f"evaluations/{label}") for label in evaluations},
                    "leaderboard": self.spec.settings.leaderboard.model_dump(mode="json")}
        for table, data in tables.items():
            self.store.save(f"leaderboard/{table}", producer, {
                ".parquet": data.write_parquet,
                ".csv": data.write_csv,
                ".md": lambda tmp, data=data: tmp.write_text(report.markdown(data), encoding="utf-8"),
            })
        plots.render(self.out, self.spec.settings.leaderboard.scatter)
        return tables

    def _write_run_json(self, result: RunResult, started: float) -> None:
        plugins = {f"{kind}.{u.label}": {"plugin": u.plugin.name, "version": u.plugin.version,
                                         "class": f"{type(u.plugin).__module__}.{type(u.plugin).__qualname__}"}
                   for kind, uses in (("valuators", self.spec.valuators), ("selection", self.spec.selectors))
                   for u in uses.values()}
        record = {
            "spec_file": str(self.spec.source),
            "spec": self.spec.resolved(),
            "seed": self.spec.settings.seed,
            "dvbench": __version__,
            "python": platform.python_version(),
            "plugins": plugins,
            "model": result.model,
            "tokens": result.tokens,
            "timings_s": result.timings,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        }
        write_text_atomic(self.out / "run.json", json.dumps(record, indent=2) + "\n")


def _read_scores(files: dict[str, Path], provenance: dict) -> Scores:
    frame = pl.read_parquet(files[".parquet"])
    per_anchor, anchor_ids = None, None
    if ".per_anchor.parquet" in files:
        matrix = pl.read_parquet(files[".per_anchor.parquet"]).drop("candidate_id")
        anchor_ids, per_anchor = tuple(matrix.columns), matrix.to_numpy().T
    details = read_npz(files[".details.npz"]) if ".details.npz" in files else {}
    stats = json.loads(files[".stats.json"].read_text()) if ".stats.json" in files else {}
    return Scores(tuple(frame["candidate_id"].to_list()), frame["score"].to_numpy(), provenance["plugin"],
                  provenance["version"], provenance["config"], per_anchor, anchor_ids, details, stats)
