"""Rows from any source (files in :mod:`~dvbench.harness.data.files`, Hugging Face datasets in
:mod:`~dvbench.harness.data.hf`) validated into examples on one path: :func:`examples_from_rows`.

Every row becomes an :class:`~dvbench.harness.records.Example`. Its id is the row's ``id`` when
given, else derived from its text, so it is stable across runs and row orders. ``subset`` comes
from a ``subset`` or ``dataset`` column; every other column lands in ``meta``.

Every row is read: the error names each bad row (the first :data:`SHOWN`, then a count), so one
pass over the file finds them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dvbench.harness.errors import InputError
from dvbench.harness.records import Example

REQUIRED = ("instruction", "output")
TEXT = ("instruction", "input", "output")
SHOWN = 20  # bad rows named in one error; the rest are counted


@dataclass(frozen=True)
class Unreadable:
    """A row its source could not parse (a JSONL line that is not JSON): why, and what to do."""

    reason: str


def content_id(instruction: str, input: str, output: str) -> str:
    """A stable id from an example's text: 16 hex digits of its SHA-256."""
    text = json.dumps([instruction, input, output], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def examples_from_rows(
    source: str, rows: Iterable[tuple[str, Any]], *, require_output: bool = True
) -> tuple[Example, ...]:
    """Validate ``(where, row)`` pairs (``where`` as ``line 3`` or ``row 3``; a row may be
    :class:`Unreadable`) into examples with unique ids. Every bad row is reported, each as
    ``<where>: <problem>`` naming the field at fault, in one error that starts ``<source>:``."""
    required = REQUIRED if require_output else REQUIRED[:1]
    examples, problems, seen = [], [], {}
    for where, row in rows:
        try:
            example, given = _example(where, row, required)
        except ValueError as problem:
            problems.append(f"{where}: {problem}")
            continue
        if example.id in seen:
            first, first_given = seen[example.id]
            if given or first_given:
                problems.append(f"{where} repeats id {example.id!r} of {first}; ids must be unique")
            else:
                problems.append(f"{where} repeats {first} (the same instruction, input and output, and no id); "
                                f"remove one, or give each an 'id'")
            continue
        seen[example.id] = where, given
        examples.append(example)
    if problems:
        raise InputError(_report(source, problems))
    if not examples:
        raise InputError(f"{source}: holds no rows; give at least one example")
    return tuple(examples)


def _report(source: str, problems: list[str]) -> str:
    """One line for one bad row; for more, a count and then one indented line each."""
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    more = [f"  ... and {len(problems) - SHOWN} more"] if len(problems) > SHOWN else []
    return "\n".join([f"{source}: {len(problems)} bad rows; fix each", *(f"  {p}" for p in problems[:SHOWN]), *more])


def _example(where: str, row: Any, required: tuple[str, ...]) -> tuple[Example, bool]:
    """The row's example, and whether its id was given; a ValueError says what is wrong."""
    if isinstance(row, Unreadable):
        raise ValueError(row.reason)
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, found {type(row).__name__}")
    row = {k: "" if v is None else v for k, v in row.items()}
    for name in TEXT:
        value = row.get(name, "")
        if not isinstance(value, str):
            raise ValueError(f"field {name!r} must be text, found {type(value).__name__}")
    for name in required:
        if not row.get(name, "").strip():
            raise ValueError(f"field {name!r} is missing or empty; every row needs one")
    instruction, input, output = (row.get(name, "") for name in TEXT)
    given = row.get("id") if row.get("id") != "" else None
    if given is not None and (isinstance(given, bool) or not isinstance(given, (str, int))):
        raise ValueError(f"field 'id' must be text or an integer, found {type(given).__name__} {given!r}")
    subset = row.get("subset") or row.get("dataset") or None
    meta = {k: v for k, v in row.items() if k not in (*TEXT, "id", "subset", "dataset")}
    example = Example(
        id=str(given) if given is not None else content_id(instruction, input, output),
        instruction=instruction,
        input=input,
        output=output,
        subset=None if subset is None else str(subset),
        meta=meta,
    )
    return example, given is not None
