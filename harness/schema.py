"""The spec's schema: every section's typed, validated keys (with their help text, which
specs/README.md documents), and the entries of the plugin sections (``use`` and the entry's own
keys; every other key is the plugin's option)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_serializer, field_validator, model_validator

from dvbench.harness.config import Config, ExistingPath, SpecPath
from dvbench.harness.data.generated import FACT_PAIRS, FACTS_BY_DEFAULT, FAMILIES
from dvbench.harness.lm.devices import DEVICE
from dvbench.harness.records import ModelRef
from dvbench.harness.template import NAMES, Template

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LABEL_HELP = "letters, digits, '.', '_' and '-', starting with a letter or digit"


class ModelSection(Config):
    name: str = Field("embedded", description="'embedded', a hub name, a local folder or a .gguf file.")
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = Field(
        "float32", description="Weights' dtype; log-softmax is float32 or better whatever this is."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; torch's default when unset.")
    device: str = Field("auto", description="Where every role runs the model: 'auto' (the "
                        "first CUDA device when torch sees one, else the CPU), 'cpu', 'cuda' or 'cuda:N'; run.json's "
                        "'devices' says where each role ran.")
    allow_download: bool = Field(False, description="Allow hub downloads (off: offline).")
    trust_remote_code: bool = Field(False, description="Run a hub model's own code (off unless you trust it).")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE, value):
            raise ValueError(f"{value!r} is no device; give auto, cpu, cuda or cuda:N (N: the GPU's index)")
        return value

    @field_validator("name")
    @classmethod
    def _local(cls, value: str, info: ValidationInfo) -> str:
        """A name that is a file or folder beside the spec means that path."""
        base = (info.context or {}).get("base_dir")
        if value != "embedded" and base is not None and not Path(value).is_absolute() and (base / value).exists():
            return str((base / value).resolve())
        return value

    def ref(self, device: str = "cpu") -> ModelRef:
        """The model's reference, on ``device`` (``device`` resolved: see :mod:`dvbench.harness.lm.devices`)."""
        return ModelRef(self.name, self.dtype, self.threads, self.allow_download, self.trust_remote_code, device)


class FileSource(Config):
    path: ExistingPath | None = Field(
        None, description="A .json, .jsonl, .csv or .parquet file of Alpaca rows, or a Hugging Face dataset folder."
    )
    dataset: str | None = Field(None, min_length=1, description="A Hugging Face Hub dataset name, instead of 'path'.")
    split: str | None = Field(
        None, min_length=1, description="The split to read; default 'train' on the hub, a folder's only split."
    )
    config: str | None = Field(None, min_length=1, description="The hub dataset's configuration (the Hub's 'subset').")
    revision: str | None = Field(None, min_length=1, description="The hub dataset's branch, tag or commit.")
    allow_download: bool = Field(False, description="Allow hub downloads for this dataset (off: local cache only).")

    @model_validator(mode="after")
    def _path_or_dataset(self) -> FileSource:
        return self._one_place()

    def _one_place(self) -> FileSource:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give 'path' (a file or folder) or 'dataset' (a hub name), "
                             + ("not both" if self.path else "found neither"))
        hub_only = [key for key in ("config", "revision", "allow_download") if getattr(self, key)]
        if self.path is not None and hub_only:
            raise ValueError(f"{', '.join(map(repr, hub_only))}: only for a hub 'dataset', not with 'path'")
        if self.path is not None and self.split is not None and not Path(self.path).is_dir():
            raise ValueError("'split' applies to a dataset folder or a hub 'dataset', not to a file")
        return self


class GeneratedSource(Config):
    candidates: int = Field(300, ge=1, description="Candidates to generate.")
    anchors: int = Field(16, ge=0, description="Anchor tasks to generate.")
    eval: int = Field(32, ge=0, description="Eval prompts to generate.")
    defect_fraction: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of candidates with a planted defect.")
    families: list[Literal[tuple(FAMILIES)]] = Field(  # type: ignore[valid-type]
        list(FAMILIES), min_length=1, description="Task families to draw from."
    )
    seed: int | None = Field(None, ge=0, description="Generator seed; the spec's seed when unset.")
    facts: int | None = Field(None, ge=0, le=len(FACT_PAIRS),
                              description="Anchors that are planted facts, each with one known supporting "
                                          f"candidate; unset: min(anchors // 4, {FACTS_BY_DEFAULT}).")

    @model_validator(mode="before")
    @classmethod
    def _default_facts(cls, data: Any) -> Any:
        """Unset ``facts`` becomes ``min(anchors // 4, FACTS_BY_DEFAULT)``: none below 4 anchors."""
        if isinstance(data, dict) and data.get("facts") is None:
            anchors = data.get("anchors", cls.model_fields["anchors"].default)
            data = {**data, "facts": min(anchors // 4, FACTS_BY_DEFAULT) if isinstance(anchors, int) else 0}
        return data

    @model_validator(mode="after")
    def _room_for_facts(self) -> GeneratedSource:
        if self.facts > min(self.anchors, self.candidates):
            raise ValueError(f"facts ({self.facts}) must be at most anchors ({self.anchors}) and candidates "
                             f"({self.candidates}): each planted fact is one anchor and one candidate")
        return self


class KMeansAnchors(Config):
    """Anchors built as Nuggets built the paper's K-Means-100 (:mod:`dvbench.harness.stages.anchors`)."""

    k: int = Field(100, ge=1, description="Anchors to build: one per K-Means cluster, the pool row nearest its centroid.")
    from_: FileSource | None = Field(
        None, alias="from", description="The pool to cluster: 'candidates' (the spec's candidates; unset means it), "
                                        "or a source as under data.candidates."
    )
    seed: int | None = Field(None, ge=0, description="K-Means' seed (scikit-learn's random_state); the spec's seed "
                                                     "when unset.")
    layer: int = Field(-1, description="The hidden layer mean-pooled over each example's real tokens: -1 the last, "
                                       "0 the token embeddings.")
    batch_size: int = Field(16, ge=1, description="Pool rows per forward while embedding (the anchors do not depend "
                                                  "on it).")
    keep_in_pool: bool = Field(False, description="With 'from: candidates', leave the anchors among the candidates "
                                                  "(off: no anchor is also a candidate).")

    @model_validator(mode="before")
    @classmethod
    def _candidates(cls, data: Any) -> Any:
        """``from: candidates`` is the unset pool; any other text is refused here, in one line."""
        if not isinstance(data, dict) or isinstance(data.get("from"), (dict, type(None))):
            return data
        if data["from"] != "candidates":
            raise ValueError(f"'from' is 'candidates' or a source ({{path: ...}} or {{dataset: ...}}), "
                             f"not {data['from']!r}")
        return {key: value for key, value in data.items() if key != "from"}

    @field_serializer("from_")
    def _named(self, pool: FileSource | None) -> Any:
        return "candidates" if pool is None else pool.model_dump(mode="json")

    @model_validator(mode="after")
    def _keep_applies(self) -> KMeansAnchors:
        if self.keep_in_pool and self.from_ is not None:
            raise ValueError("'keep_in_pool' applies to 'from: candidates'; a separate pool is never valued, remove it")
        return self


class AnchorSource(FileSource):
    kmeans: KMeansAnchors | None = Field(None, description="Build the anchors from a pool by K-Means, instead of "
                                                           "reading them ('path' or 'dataset').")

    @model_validator(mode="after")
    def _path_or_dataset(self) -> AnchorSource:
        if self.kmeans is None:
            return self._one_place()
        given = [key for key in FileSource.model_fields if getattr(self, key)]
        if given:
            raise ValueError(f"'kmeans' builds the anchors; remove {', '.join(map(repr, given))} (or 'kmeans')")
        return self


class DataSection(Config):
    generated: GeneratedSource | None = Field(None, description="Use dvbench's generated dataset for every split.")
    candidates: FileSource | None = Field(None, description="The pool to value.")
    anchors: AnchorSource | None = Field(None, description="The task set the value is measured against, read or "
                                                           "built by K-Means.")
    eval: FileSource | None = Field(None, description="Prompts for evaluating fine-tuned models.")

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        files = [name for name in ("candidates", "anchors", "eval") if getattr(self, name) is not None]
        if self.generated is not None and files:
            raise ValueError(f"give either 'generated' or data files, not both (found generated and {files[0]})")
        if self.generated is None and self.candidates is None:
            raise ValueError("give 'generated' or a 'candidates' file")
        return self


class TemplateSection(Config):
    name: Literal[NAMES] = Field("alpaca", description="How a row becomes a query: alpaca, plain or chat.")  # type: ignore[valid-type]
    header: str = Field("", description="Text before the query, in zero-shot and one-shot contexts alike.")
    separator: str = Field("\n\n", description="Text after a one-shot demonstration.")
    eos: bool = Field(True, description="Append the tokenizer's EOS token to every answer, and score it.")
    max_length: int = Field(1024, ge=2, description="Longest sequence in tokens; demonstration, then query, cut from the left.")
    max_answer_tokens: int = Field(512, ge=1, description="Longest answer in tokens; longer ones are cut from the right.")

    @model_validator(mode="after")
    def _room(self) -> TemplateSection:
        if self.max_answer_tokens >= self.max_length:
            raise ValueError(f"max_answer_tokens ({self.max_answer_tokens}) must be below max_length "
                             f"({self.max_length}), leaving room for the query")
        return self

    def template(self) -> Template:
        return Template(**self.model_dump())


def _within(fractions: list[float], one_allowed: bool) -> list[float]:
    """``fractions``, each in (0, 1] (or (0, 1) unless ``one_allowed``); else a ValueError."""
    for q in fractions:
        if not (0.0 < q < 1.0 or (one_allowed and q == 1.0)):
            raise ValueError(f"each fraction must lie in (0, 1{']' if one_allowed else ')'}, got {q}")
    return fractions


class LeaderboardSection(Config):
    overlap_fractions: list[float] = Field(
        [0.05, 0.1, 0.2, 0.5], min_length=1, description="Fractions q for the top-q overlap table."
    )
    scatter: list[str] | None = Field(None, min_length=2, max_length=2, description="The two valuator labels of "
                                      "the scatter plot; unset: the first two.")
    level: float = Field(0.95, gt=0, lt=1, description="Confidence level of every table's bootstrap interval "
                                                       "(ci_low, ci_high).")
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples per interval, seeded by the spec's seed; "
                                                  "0: no intervals.")

    @field_validator("overlap_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        return _within(value, one_allowed=True)


class GroundTruthSection(Config):
    trainer: str | None = Field(None, description="The training entry whose trainer and options retrain every "
                                                  "subset; unset: the spec's only training entry.")
    subsets: int = Field(16, ge=3, description="K: random subsets of the pool, each fine-tuned from the base model.")
    fraction: float = Field(0.5, gt=0, lt=1, description="α: each subset's share of the pool.")
    removal: list[float] = Field([0.1], description="Fractions q: each valuator's top q removed and the rest "
                                                   "fine-tuned; [] for none.")
    random_removals: int = Field(4, ge=1, description="R: seeded random removals per fraction, shared by every "
                                                      "valuator.")

    @field_validator("removal")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        return _within(value, one_allowed=False)


class ExecutionSection(Config):
    backend: Literal["local", "ray"] = Field("local", description="Where independent units of work run (valuation "
                                             "shards, fine-tunes, evaluations): 'local', in this process, one after "
                                             "another; 'ray', on a pool of Ray workers (pip install 'dvbench[ray]').")
    address: str | None = Field(None, min_length=1, description="The Ray cluster to join: unset starts a local Ray "
                                "on this machine; 'auto' the one `ray start` started here; 'ray://host:port' a remote "
                                "one. Only with backend 'ray'.")
    workers: int = Field(2, ge=1, description="Ray workers (actors), each loading the model once and keeping it.")
    num_cpus: int = Field(1, ge=1, description="CPUs per worker, and its torch threads (model.threads, when set, "
                                               "wins).")
    num_gpus: float = Field(0, ge=0, description="GPUs per worker (a fraction shares one); 0: none.")
    max_retries: int = Field(3, ge=0, description="Times a unit whose worker died is retried on a restarted worker "
                                                  "before the run stops.")

    @model_validator(mode="after")
    def _ray_only(self) -> ExecutionSection:
        if self.backend == "local" and self.address is not None:
            raise ValueError("'address' names a Ray cluster; set backend: ray, or remove it")
        return self


class SpecModel(Config):
    name: str = Field(description="The comparison's name; the default output folder is runs/<name>.")
    description: str = Field("", description="Free text, for people.")
    seed: int = Field(0, ge=0, description="Seed of every seeded step that sets none of its own.")
    model: ModelSection = Field(ModelSection(), description="The model every role starts from.")
    data: DataSection = Field(description="Candidates, anchors and eval set.")
    template: TemplateSection = Field(TemplateSection(), description="How examples become token sequences.")
    tracked: str | None = Field(None, min_length=1, description="Regex of the linear layers gradient methods track; "
                                                                "unset: every linear layer in the transformer blocks.")
    valuators: dict[str, dict[str, Any]] = Field(description="label -> {use: valuator, ...config}.")
    selection: dict[str, dict[str, Any]] = Field({}, description="label -> {use: selector, reference?, ...config}.")
    training: dict[str, dict[str, Any]] = Field({}, description="label -> {use: trainer, selections?, ...config}: "
                                                                 "fine-tune on every selected subset.")
    evaluation: dict[str, dict[str, Any]] = Field({}, description="label -> {use: evaluator, ...config}: measure "
                                                                   "every fine-tuned model on the eval set.")
    ground_truth: GroundTruthSection | None = Field(None, description="Counterfactual retraining: a bank of "
                                                    "fine-tunes on random subsets (LDS) and removal retrains.")
    leaderboard: LeaderboardSection = Field(LeaderboardSection(), description="Leaderboard options.")
    execution: ExecutionSection = Field(ExecutionSection(), description="Where units of work run: in this process "
                                        "or on Ray workers; never changes a result.")
    output_dir: SpecPath | None = Field(None, description="Where artifacts go (default runs/<name>); --out overrides.")

    @field_validator("valuators")
    @classmethod
    def _some_valuator(cls, value: dict) -> dict:
        if not value:
            raise ValueError("declare at least one valuator, as 'label: {use: random}'")
        return value

    @field_validator("tracked")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression ({error})") from None
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not LABEL.match(value):
            raise ValueError(f"a name is {LABEL_HELP}")
        return value


class Entry(Config):
    """A spec entry: ``use`` names the plugin; every other key is the plugin's own option.

    ``options`` holds options too: an option whose name is one of the entry's own keys
    (``use``, and ``reference`` or ``selections`` where the section has them) goes there, so a
    plugin may name its options anything.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    use: str = Field(description="The plugin's registered name.")
    options: dict[str, Any] = Field({}, description="Plugin options, for one named like a key of the entry.")

    def plugin_options(self) -> tuple[dict[str, Any], list[str]]:
        """The plugin's options, and the names given both flat and under ``options``."""
        flat = dict(self.model_extra or {})
        return {**flat, **self.options}, sorted(set(flat) & set(self.options))


class SelectionEntry(Entry):
    reference: str | None = Field(None, description="The valuator label whose bins every valuator's are matched to.")


class TrainingEntry(Entry):
    selections: list[str] | None = Field(None, description="The selection labels to fine-tune on; unset: every one.")


SECTIONS = {"valuators": ("valuator", Entry), "selection": ("selector", SelectionEntry),
            "training": ("trainer", TrainingEntry), "evaluation": ("evaluator", Entry)}
"""Each plugin section of a spec: the role its entries fill and the entry's own keys."""
