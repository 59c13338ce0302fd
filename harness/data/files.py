"""Loads Alpaca-style rows (``instruction``, ``input``, ``output``) from JSON, JSONL, CSV and
parquet files, or a Hugging Face dataset folder; rows are validated by
:func:`~dvbench.harness.data.rows.examples_from_rows`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dvbench.harness.data.rows import Unreadable, examples_from_rows
from dvbench.harness.errors import InputError
from dvbench.harness.records import Example


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
                    rows.append((f"line {number}", Unreadable(f"not valid JSON ({error.msg}); fix or remove that line")))
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
    except pl.exceptions.NoDataError:
        return []  # no header, no rows: reported as an empty file
    except pl.exceptions.ComputeError as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"{path}: cannot be read as {path.suffix[1:]} ({first}); check the file") from None
    return [(f"row {i}", row) for i, row in enumerate(frame.iter_rows(named=True), 1)]
