"""A plugin's options as documentation: one row per field of its ``Config`` (key, type, default,
help), read from the annotations, constraints and ``Field(description=...)`` of the code itself.

``dvbench plugins`` prints these rows, and specs/README.md's option tables are
:func:`markdown_table`'s output (tests/test_docs.py checks they are the same). An annotation's own
words (:class:`~dvbench.harness.config.TypeText`) name what a validator allows, where the
annotation alone cannot say it (a path, a count or a fraction).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dvbench.harness.config import TypeText

_NAMES = {str: "text", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Option:
    """One option of a plugin, as text."""

    key: str
    type: str
    default: str
    help: str


def options(config: type[BaseModel]) -> list[Option]:
    """Every field of ``config``, in declaration order."""
    return [Option(key, _type(field), _default(field), field.description or "")
            for key, field in config.model_fields.items()]


def markdown_table(config: type[BaseModel]) -> str:
    """The options of ``config`` as a markdown table (``|`` escaped in every cell)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for o in options(config):
        cells = (f"`{o.key}`", o.type, o.default, o.help)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def _type(field: FieldInfo) -> str:
    annotation, metadata = field.annotation, list(field.metadata)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)
    if optional:
        annotation = typing.Union[tuple(a for a in typing.get_args(annotation) if a is not type(None))]
    text = _describe(annotation, metadata)
    # unset by default says itself in the default column; otherwise say that null unsets it
    return text + " or unset" if optional and field.default is not None else text


def _describe(annotation, metadata: list) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe(args[0], [*annotation.__metadata__, *metadata])
    words = next((m.text for m in metadata if isinstance(m, TypeText)), None)
    if words:
        return words
    if origin is typing.Literal:
        return " | ".join(f"`{_value(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, metadata) for a in args)
    if origin is list:
        inner = _describe(args[0], []) if args else "value"
        text = f"list of {inner}s" if inner in _NAMES.values() else f"list of ({inner})"
        least = next((m.min_length for m in metadata if isinstance(m, at.MinLen)), 0)
        return f"non-empty {text}" if least == 1 else f"{text}, at least {least}" if least else text
    name = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return name + _bounds(metadata)


def _bounds(metadata: list) -> str:
    """`` ≥ 1``, `` > 0`` or `` in [0, 1)`` from the field's numeric constraints."""
    low = next(((_value(m.ge), "[", "≥") for m in metadata if isinstance(m, at.Ge)), None) \
        or next(((_value(m.gt), "(", ">") for m in metadata if isinstance(m, at.Gt)), None)
    high = next(((_value(m.le), "]", "≤") for m in metadata if isinstance(m, at.Le)), None) \
        or next(((_value(m.lt), ")", "<") for m in metadata if isinstance(m, at.Lt)), None)
    if low and high:
        return f" in {low[1]}{low[0]}, {high[0]}{high[1]}"
    bound = low or high
    return f" {bound[2]} {bound[0]}" if bound else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return f"`{json.dumps(list(value), ensure_ascii=False)}`"
    return f"`{_value(value)}`" if value != "" else '`""`'


def _value(value) -> str:
    """A value as YAML spells it: ``true``, ``2e-5``, ``mean``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        mantissa, _, exponent = repr(value).partition("e")
        return f"{mantissa}e{int(exponent)}" if exponent else mantissa
    return str(value)
