"""YAML spec -> validated :class:`Spec`, before any model loads.

Every problem in a spec is collected into one :class:`ConfigError` naming the file, the YAML
path (``valuators.icp.batch_size``), its line, what was given and what is allowed. Plugin
configs are validated by each plugin's own ``Config``; plugins never see YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dvbench.harness.config import Config, ConfigError, ExistingPath, Problem, SpecPath, validate
from dvbench.harness.data.generated import FACT_PAIRS, FACTS_BY_DEFAULT, FAMILIES
from dvbench.harness.template import NAMES, Template
from dvbench.harness.plugins import Registry, load_registry
from dvbench.harness.records import ModelRef
from dvbench.harness.roles import Plugin

MAX_VALUES = 100_000  # values a spec may expand to through YAML aliases
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LABEL_HELP = "letters, digits, '.', '_' and '-', starting with a letter or digit"


class ModelSection(Config):
    name: str = Field("embedded", description="'embedded', a hub name, a local folder or a .gguf file.")
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = Field(
        "float32", description="Weights' dtype; log-softmax is float32 or better whatever this is."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; torch's default when unset.")
    allow_download: bool = Field(False, description="Allow hub downloads (off: offline).")
    trust_remote_code: bool = Field(False, description="Run a hub model's own code (off unless you trust it).")

    @field_validator("name")
    @classmethod
    def _local(cls, value: str, info: ValidationInfo) -> str:
        """A name that is a file or folder beside the spec means that path."""
        base = (info.context or {}).get("base_dir")
        if value != "embedded" and base is not None and not Path(value).is_absolute() and (base / value).exists():
            return str((base / value).resolve())
        return value

    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.dtype, self.threads, self.allow_download, self.trust_remote_code)


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


class DataSection(Config):
    generated: GeneratedSource | None = Field(None, description="Use dvbench's generated dataset for every split.")
    candidates: FileSource | None = Field(None, description="The pool to value.")
    anchors: FileSource | None = Field(None, description="The task set the value is measured against.")
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


class LeaderboardSection(Config):
    overlap_fractions: list[float] = Field(
        [0.05, 0.1, 0.2, 0.5], min_length=1, description="Fractions q for the top-q overlap table."
    )
    scatter: list[str] | None = Field(None, min_length=2, max_length=2, description="The two valuator labels of "
                                      "the scatter plot; unset: the first two.")

    @field_validator("overlap_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for q in value:
            if not 0.0 < q <= 1.0:
                raise ValueError(f"each fraction must lie in (0, 1], got {q}")
        return value


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
    leaderboard: LeaderboardSection = Field(LeaderboardSection(), description="Leaderboard options.")
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


@dataclass(frozen=True)
class Use:
    """One spec entry: a label bound to a configured plugin, with the entry's own keys."""

    label: str
    plugin: Plugin
    entry: Entry

    @property
    def reference(self) -> str | None:
        return getattr(self.entry, "reference", None)


@dataclass(frozen=True)
class Spec:
    """A validated spec: the settings, and every plugin instantiated with its config, by section
    (the names of the YAML, the code and run.json alike)."""

    source: Path
    settings: SpecModel
    valuators: dict[str, Use]
    selection: dict[str, Use]
    training: dict[str, Use]
    evaluation: dict[str, Use]

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def template(self) -> Template:
        return self.settings.template.template()

    def sections(self) -> dict[str, dict[str, Use]]:
        return {section: getattr(self, section) for section in SECTIONS}

    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in, as JSON-ready data."""
        data = self.settings.model_dump(mode="json")
        for section, uses in self.sections().items():
            data[section] = {u.label: self._entry(u) for u in uses.values()}
        return data

    def _entry(self, use: Use) -> dict[str, Any]:
        """An entry as the run uses it: its own keys (a training entry's selections filled in),
        then the plugin's whole config, under ``options`` where a name is the entry's own."""
        own = {"use": use.plugin.name}
        if isinstance(use.entry, SelectionEntry):
            own["reference"] = use.reference
        if isinstance(use.entry, TrainingEntry):
            own["selections"] = self.trained_selections(use)
        config = use.plugin.provenance()["config"]
        clashing = {k: v for k, v in config.items() if k in own or k == "options"}
        return {**own, **{k: v for k, v in config.items() if k not in clashing},
                **({"options": clashing} if clashing else {})}

    def trained_selections(self, use: Use) -> list[str]:
        """The selection labels a training entry fine-tunes on: its own list, else every one."""
        chosen = use.entry.selections
        return list(chosen) if chosen is not None else list(self.selection)


def load_spec(path: str | Path, registry: Registry | None = None) -> Spec:
    """Read and validate a spec file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem((), "no such spec file")]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [Problem((), "is a folder; give the spec's YAML file")]) from None
    except PermissionError:
        raise ConfigError(str(path), [Problem((), "cannot be read (permission denied); fix its permissions")]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [Problem((), "not UTF-8 text; save the spec as UTF-8")]) from None
    try:
        node = yaml.compose(text)
        size = _expanded_size(node, {})
        if size > MAX_VALUES:
            raise ConfigError(str(path), [Problem((), f"expands to {size:,} values through YAML aliases (at most "
                                                      f"{MAX_VALUES:,}); write the spec without nested aliases")])
        data = yaml.safe_load(text)
        lines, repeated = _lines(node, (), set())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [Problem((), f"not valid YAML: {where}{getattr(error, 'problem', error)}")]) from None
    if repeated:
        problems = [Problem(key, f"repeated (also on line {lines[key]}); YAML keeps only the last, so "
                                 f"rename or remove one") for key, _ in repeated]
        raise ConfigError(str(path), problems, dict(repeated))
    return parse_spec(data, source=path, registry=registry, lines=lines)


def parse_spec(data: Any, *, source: Path, registry: Registry | None = None, lines: dict | None = None) -> Spec:
    """Validate already-parsed spec data (``source`` names it in errors and anchors its paths)."""
    if not isinstance(data, dict):
        problem = Problem((), f"expected a mapping of keys ({', '.join(SpecModel.model_fields)}), "
                              f"found {type(data).__name__}")
        raise ConfigError(str(source), [problem])
    registry = registry or load_registry()
    settings, problems = validate(SpecModel, data, base_dir=source.parent)
    uses = {section: _uses(data.get(section), section, registry, problems, source) for section in SECTIONS}
    selectors, trainers, evaluators = uses["selection"], uses["training"], uses["evaluation"]
    labels = list(data["valuators"]) if isinstance(data.get("valuators"), dict) else []
    for use in selectors.values():
        if use.reference is not None and use.reference not in labels:
            problems.append(Problem(("selection", use.label, "reference"),
                                    f"unknown valuator label {use.reference!r}; labels: {', '.join(map(str, labels))}"))
    scatter = (settings.leaderboard.scatter if settings is not None else None) or []
    for i, label in enumerate(scatter):
        if label not in labels:
            problems.append(Problem(("leaderboard", "scatter", i),
                                    f"unknown valuator label {label!r}; labels: {', '.join(map(str, labels))}"))
    chosen = list(data["selection"]) if isinstance(data.get("selection"), dict) else []
    for use in trainers.values():
        for i, name in enumerate(use.entry.selections or ()):
            if name not in chosen:
                problems.append(Problem(("training", use.label, "selections", i),
                                        f"unknown selection label {name!r}; labels: {', '.join(map(str, chosen)) or 'none'}"))
    if (trainers or evaluators) and not chosen:
        problems.append(Problem(("training",) if trainers else ("evaluation",),
                                "fine-tuning needs subsets to train on: add a 'selection' section"))
    if evaluators and not trainers:
        problems.append(Problem(("evaluation",), "evaluators measure fine-tuned models: add a 'training' section"))
    if problems:
        raise ConfigError(str(source), problems, lines)
    return Spec(source=source, settings=settings, **uses)


def _uses(entries: Any, section: str, registry: Registry, problems: list, source: Path) -> dict[str, Use]:
    """Instantiate each ``label: {use: name, ...}`` entry of ``section``; record problems instead
    of raising."""
    role, model = SECTIONS[section]
    uses: dict[str, Use] = {}
    if not isinstance(entries, dict):
        return uses  # the section's own type error is already reported
    for label, raw in entries.items():
        path = (section, label)
        if not isinstance(label, str) or not LABEL.match(label):
            problems.append(Problem(path, f"a label is {LABEL_HELP}"))
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("use"), str):
            problems.append(Problem(path, f"expected a mapping with 'use: <{role} name>'; "
                                          f"available: {registry.available(role)}"))
            continue
        entry, found = validate(model, raw, path)
        if entry is None:
            problems.extend(found)
            continue
        if entry.use not in registry.entries[role]:
            problems.append(Problem(path + ("use",), f"unknown {role} {entry.use!r}; "
                                                     f"available: {registry.available(role)}"))
            continue
        options, twice = entry.plugin_options()
        if twice:
            problems.append(Problem(path + ("options", twice[0]), "given both here and beside 'use'; keep one"))
            continue
        cls = registry.get(role, entry.use)
        instance, found = validate(cls.Config, options, path, base_dir=source.parent)
        problems.extend(found)
        if instance is not None:
            uses[label] = Use(label, cls(instance), entry)
    return uses


def _expanded_size(node: yaml.Node | None, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded, each shared node counted
    once per use but computed once (so a billion laughs costs as little as its text)."""
    if node is None:
        return 0
    if id(node) not in sizes:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def _lines(node: yaml.Node | None, path: tuple, seen: set[int]) -> tuple[dict[tuple, int], list[tuple[tuple, int]]]:
    """The 1-based line of every key and item in a composed YAML document, by path; and every
    key repeated within its mapping, with the line of the repeat. A node reached again through
    an alias is not walked again: paths inside it take the alias's line."""
    lines: dict[tuple, int] = {}
    repeated: list[tuple[tuple, int]] = []
    if node is None or id(node) in seen:
        return lines, repeated
    seen.add(id(node))
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [(path + (key.value,), key.start_mark.line + 1, value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(path + (i,), value.start_mark.line + 1, value) for i, value in enumerate(node.value)]
    for child, line, value in children:
        if child in lines:
            repeated.append((child, line))
            continue
        lines[child] = line
        inner, inner_repeated = _lines(value, child, seen)
        lines.update(inner)
        repeated.extend(inner_repeated)
    return lines, repeated
