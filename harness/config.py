"""Typed, validated configuration, and the errors that name where a value came from.

Every plugin's ``Config`` subclasses :class:`Config`: a frozen pydantic model whose fields carry
their help text (``Field(description=...)``) and whose validators refuse nonsense. Validation
is strict: ``batch_size: "8"`` is a wrong type, not an integer.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from dvbench.harness.errors import InputError


class Config(BaseModel):
    """Base class of every configuration: frozen, strict, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _resolve(value: str, info: ValidationInfo) -> str:
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    return str(path if path.is_absolute() or base is None else Path(base) / path)


def _exists(value: str) -> str:
    if not Path(value).exists():
        raise ValueError(f"no such file: {value}")
    return value


@dataclass(frozen=True)
class TypeText:
    """Annotation metadata: how an option's type reads in the docs (:mod:`dvbench.harness.options`)
    where a validator, not the annotation, says what is allowed."""

    text: str


SpecPath = Annotated[str, AfterValidator(_resolve), TypeText("path")]
"""A path; relative paths are taken from the spec file's folder."""

ExistingPath = Annotated[str, AfterValidator(_resolve), AfterValidator(_exists), TypeText("path (must exist)")]
"""A :data:`SpecPath` that must exist when the spec is checked."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, at a path such as ``valuators.icp.batch_size``."""

    path: tuple[str | int, ...]
    message: str

    @property
    def dotted(self) -> str:
        return ".".join(str(part) for part in self.path) or "(top level)"


class ConfigError(InputError):
    """Invalid input: every problem found, each with the file, YAML path and what is allowed."""

    def __init__(self, source: str, problems: list[Problem], lines: dict[tuple, int] | None = None,
                 origins: dict[tuple, str] | None = None):
        self.source = source
        self.problems = problems
        self.lines = lines or {}
        self.origins = origins or {}  # YAML path -> the --set override that gave its value
        super().__init__(self.render())

    def origin_of(self, path: tuple) -> tuple | None:
        """The path of the ``--set`` override that gave ``path`` its value, or set a key inside it."""
        inside = [o for o in self.origins if path[:len(o)] == o]
        if inside:
            return max(inside, key=len)
        return next((o for o in self.origins if path and o[:len(path)] == path), None)

    def line_of(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def render(self) -> str:
        """One problem: one line, ``file: yaml.path (line n): message`` (``--set a.b=1`` in place
        of the path and line where an override gave the value). More: a count, then one indented
        line per problem."""
        rows = []
        for problem in self.problems:
            line, origin = self.line_of(problem.path), self.origin_of(problem.path)
            if origin is not None:
                given = f"--set {self.origins[origin]}"
                where = given if origin == problem.path else f"{problem.dotted} ({given})"
            else:
                where = f"{problem.dotted} (line {line})" if line else problem.dotted
            rows.append(f"{where}: {problem.message}" if problem.path else problem.message)
        if len(rows) == 1:
            return f"{self.source}: {rows[0]}"
        return "\n".join([f"{self.source}: {len(rows)} problems", *(f"  {row}" for row in rows)])


def validate(
    model: type[BaseModel], data: Any, path: tuple = (), base_dir: Path | None = None
) -> tuple[Any, list[Problem]]:
    """Validate ``data`` as ``model``; return the instance (or None) and the problems found.

    ``base_dir`` anchors relative :data:`SpecPath` values (the spec file's folder).
    """
    try:
        return model.model_validate(data, context={"base_dir": base_dir}), []
    except ValidationError as error:
        return None, [_problem(model, err, path) for err in error.errors(include_url=False)]


def _problem(model: type[BaseModel], err: dict, prefix: tuple) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        message = f"unknown key {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        message = "missing; this key is required"
    else:
        message = err["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "expected", 1)
        if "input" in err and not isinstance(err["input"], (dict, list)):
            given = err["input"]
            message += f"; got {given!r} ({type(given).__name__})"
    return Problem(prefix + loc, message)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model reached by following ``loc`` through nested models."""
    for part in loc:
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        field = fields.get(part) if isinstance(part, str) else None
        options = (field.annotation, *typing.get_args(field.annotation)) if field else ()
        nested = [t for t in options if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return [field.alias or name for name, field in model.model_fields.items()]
