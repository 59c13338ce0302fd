"""YAML spec -> validated :class:`Spec`, before any model loads.

Every problem in a spec is collected into one :class:`ConfigError` naming the file, the YAML
path (``valuators.icp.batch_size``), its line, what was given and what is allowed. The keys
are :mod:`dvbench.harness.schema`'s; plugin configs are validated by each plugin's own
``Config``; plugins never see YAML. Aliases are expanded at most to :data:`MAX_VALUES` values.
Command-line ``--set`` overrides (:mod:`dvbench.harness.overrides`) edit the data before it is
validated, and errors about what they set name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from dvbench.harness import overrides as edits
from dvbench.harness.config import ConfigError, Problem, validate
from dvbench.harness.errors import InputError
from dvbench.harness.plugins import Registry, load_registry
from dvbench.harness.roles import Plugin
from dvbench.harness.schema import (LABEL, LABEL_HELP, SECTIONS, Entry, GroundTruthSection, SelectionEntry,
                                    SpecModel, TrainingEntry)
from dvbench.harness.template import Template

MAX_VALUES = 100_000  # values a spec may expand to through YAML aliases


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
    (the names of the YAML, the code and run.json alike); the command line's ``--set`` overrides
    (already in the settings) and ``--limit`` (applied by the data stage)."""

    source: Path
    settings: SpecModel
    valuators: dict[str, Use]
    selection: dict[str, Use]
    training: dict[str, Use]
    evaluation: dict[str, Use]
    overrides: tuple[str, ...] = ()
    limit: int | None = None

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
        data = self.settings.model_dump(mode="json", by_alias=True)  # data.anchors.kmeans.from
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

    def ground_truth_trainer(self) -> Use:
        """The training entry the retrain bank uses (the spec has a ``ground_truth`` section)."""
        label = self.settings.ground_truth.trainer
        return self.training[label] if label is not None else next(iter(self.training.values()))

    def trained_selections(self, use: Use) -> list[str]:
        """The selection labels a training entry fine-tunes on: its own list, else every one."""
        chosen = use.entry.selections
        return list(chosen) if chosen is not None else list(self.selection)


def load_spec(path: str | Path, registry: Registry | None = None, *, overrides: Sequence[str] = (),
              limit: int | None = None) -> Spec:
    """Read and validate a spec file, ``overrides`` (``a.b.c=VALUE``) applied; raise
    :class:`ConfigError` listing every problem. ``limit``: the candidates to keep (at least 1)."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: give the number of candidates to keep, at least 1")
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
    try:
        origins = edits.apply(data, list(overrides)) if isinstance(data, dict) else {}
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    spec = parse_spec(data, source=path, registry=registry, lines=lines, origins=origins)
    return replace(spec, overrides=tuple(overrides), limit=limit)


def parse_spec(data: Any, *, source: Path, registry: Registry | None = None, lines: dict | None = None,
               origins: dict | None = None) -> Spec:
    """Validate already-parsed spec data (``source`` names it in errors and anchors its paths;
    ``origins``: the paths ``--set`` overrides gave, to name them in errors)."""
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
    truth = settings.ground_truth if settings is not None else None
    if truth is not None:
        problems.extend(_ground_truth_trainer(truth, trainers, list(data.get("training") or {})))
    if evaluators and not chosen:
        problems.append(Problem(("evaluation",), "fine-tuning needs subsets to train on: add a 'selection' section"))
    elif trainers and not chosen and truth is None:
        problems.append(Problem(("training",), "fine-tuning needs subsets to train on: add a 'selection' section "
                                               "(or a 'ground_truth' section that retrains with it)"))
    if evaluators and not trainers:
        problems.append(Problem(("evaluation",), "evaluators measure fine-tuned models: add a 'training' section"))
    if problems:
        raise ConfigError(str(source), problems, lines, origins)
    return Spec(source=source, settings=settings, **uses)


def _ground_truth_trainer(truth: GroundTruthSection, trainers: dict, labels: list) -> list[Problem]:
    """The ground truth retrains with a training entry: the one it names, else the only one."""
    if truth.trainer is None and len(labels) != 1:
        why = "there is none: add a 'training' section" if not labels else f"there are {len(labels)}: name one"
        return [Problem(("ground_truth", "trainer"), f"the retrain bank needs one training entry; {why}")]
    if truth.trainer is not None and truth.trainer not in labels:
        return [Problem(("ground_truth", "trainer"), f"unknown training label {truth.trainer!r}; labels: "
                                                    f"{', '.join(map(str, labels)) or 'none'}")]
    return []


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
