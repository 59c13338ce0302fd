"""Loads Alpaca-style rows (``instruction``, ``input``, ``output``) from JSON, JSONL, CSV and
parquet files, and validates rows from any source (files here, Hugging Face datasets in
:mod:`~dvbench.harness.data.hf`) on one path: :func:`examples_from_rows`.

Every row becomes an :class:`~dvbench.harness.records.Example`. Its id is the row's ``id`` when
given, else derived from its text, so it is stable across runs and row orders. ``subset`` comes
from a ``subset`` or ``dataset`` column; every other column lands in ``meta``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dvbench.harness.config import InputError
from dvbench.harness.records import Example

REQUIRED = ("instruction", "output")
TEXT = ("instruction", "input", "output")


def content_id(instruction: str, input: str, output: str) -> str:
    """A stable id from an example's text: 16 hex digits of its SHA-256."""
    text = json.dumps([instruction, input, output], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_examples(
    path: str | Path, *, require_output: bool = True, split: str | None = None
) -> tuple[Example, ...]:
    """Read a ``.json`` (a list of objects), ``.jsonl`` (one object a line), ``.csv`` (a header
    row, every cell read as text) or ``.parquet`` file; or a folder holding a Hugging Face
    dataset (see :func:`~dvbench.harness.data.hf.folder_rows`, which ``split`` is for).
    Empty cells count as empty text."""
    path = Path(path)
    if path.is_dir():
        from dvbench.harness.data.hf import folder_rows

        source, rows = folder_rows(path, split)
        return examples_from_rows(source, rows, require_output=require_output)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder; check the data path in the spec")
    if split is not None:
        raise InputError(f"{path}: 'split' applies to dataset folders and hub datasets, not to a file; remove it")
    return examples_from_rows(str(path), _rows(path), require_output=require_output)


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
    return tuple(examples)


def _rows(path: Path) -> list[tuple[str, Any]]:
    if path.suffix in (".csv", ".parquet"):
        return _table_rows(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}); re-encode the file as UTF-8") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as error:
                    raise InputError(f"{path}: line {number}: not valid JSON ({error.msg}); fix or remove that line") from None
        return rows
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: line {error.lineno}: not valid JSON ({error.msg}); fix the file there") from None
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of objects, found {type(data).__name__}")
        return [(f"row {i}", row) for i, row in enumerate(data, 1)]
    raise InputError(f"{path}: unknown data format {path.suffix!r}; use .json, .jsonl, .csv or .parquet")


def _table_rows(path: Path) -> list[tuple[str, Any]]:
    import polars as pl

    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        else:
            frame = pl.read_parquet(path)
    except pl.exceptions.ComputeError as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"{path}: cannot be read as {path.suffix[1:]} ({first}); check the file") from None
    return [(f"row {i}", row) for i, row in enumerate(frame.iter_rows(named=True), 1)]


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
    if given is not None and not isinstance(given, (str, int)):
        raise InputError(f"{source}: {where}: field 'id' must be text or an integer")
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
