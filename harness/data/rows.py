"""Rows from any source (files in :mod:`~dvbench.harness.data.files`, Hugging Face datasets in
:mod:`~dvbench.harness.data.hf`) validated into examples on one path: :func:`examples_from_rows`.

Every row becomes an :class:`~dvbench.harness.records.Example`. Its id is the row's ``id`` when
given, else derived from its text, so it is stable across runs and row orders. ``subset`` comes
from a ``subset`` or ``dataset`` column; every other column lands in ``meta``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from dvbench.harness.errors import InputError
from dvbench.harness.records import Example

REQUIRED = ("instruction", "output")
TEXT = ("instruction", "input", "output")


def content_id(instruction: str, input: str, output: str) -> str:
    """A stable id from an example's text: 16 hex digits of its SHA-256."""
    text = json.dumps([instruction, input, output], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def examples_from_rows(
    source: str, rows: Iterable[tuple[str, Any]], *, require_output: bool = True
) -> tuple[Example, ...]:
    """Validate ``(where, row)`` pairs (``where`` as ``line 3`` or ``row 3``) into examples with
    unique ids. Every error starts ``<source>: <where>:`` and names the field at fault."""
    required = REQUIRED if require_output else REQUIRED[:1]
    examples, seen = [], {}
    for where, row in rows:
        example = _example(source, where, row, required)
        if example.id in seen:
            raise InputError(
                f"{source}: {where} repeats id {example.id!r} of {seen[example.id]}; ids must be unique"
            )
        seen[example.id] = where
        examples.append(example)
    if not examples:
        raise InputError(f"{source}: holds no rows; give at least one example")
    return tuple(examples)


def _example(source: str, where: str, row: Any, required: tuple[str, ...]) -> Example:
    if not isinstance(row, dict):
        raise InputError(f"{source}: {where}: expected an object, found {type(row).__name__}")
    row = {k: "" if v is None else v for k, v in row.items()}
    for name in TEXT:
        value = row.get(name, "")
        if not isinstance(value, str):
            raise InputError(f"{source}: {where}: field {name!r} must be text, found {type(value).__name__}")
    for name in required:
        if not row.get(name, "").strip():
            raise InputError(f"{source}: {where}: field {name!r} is missing or empty; every row needs one")
    instruction, input, output = (row.get(name, "") for name in TEXT)
    given = row.get("id") if row.get("id") != "" else None
    if given is not None and (isinstance(given, bool) or not isinstance(given, (str, int))):
        raise InputError(f"{source}: {where}: field 'id' must be text or an integer, found "
                         f"{type(given).__name__} {given!r}")
    subset = row.get("subset") or row.get("dataset") or None
    meta = {k: v for k, v in row.items() if k not in (*TEXT, "id", "subset", "dataset")}
    return Example(
        id=str(given) if given is not None else content_id(instruction, input, output),
        instruction=instruction,
        input=input,
        output=output,
        subset=None if subset is None else str(subset),
        meta=meta,
    )
