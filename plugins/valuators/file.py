"""``file``: scores computed elsewhere, read from parquet, CSV or NumPy files.

Parquet and CSV files hold one row per candidate (an id column and a score column); rows whose
id is not in the pool are ignored. A ``.npy`` file holds one score per candidate in pool order
(``key: position``), or an anchors x candidates matrix whose rows are aggregated per anchor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dvbench.harness.aggregate import over_anchors
from dvbench.harness.config import Config, ExistingPath
from dvbench.harness.errors import InputError
from dvbench.harness.hookspecs import hookimpl
from dvbench.harness.records import Scores, ValuationTask
from dvbench.harness.roles import Valuator


class FileValuator(Valuator):
    name = "file"
    version = "1.0.0"
    needs_model = False

    class Config(Config):
        path: ExistingPath = Field(description="The scores file: `.parquet`, `.csv` or `.npy`, relative to the "
                                               "spec's folder.")
        key: Literal["id", "position"] = Field(
            "id", description="Match rows to candidates by the id column (`id`), or by position in the pool "
                              "(`position`)."
        )
        id_column: str = Field("candidate_id", description="The column holding candidate ids (`key: id`).")
        score_column: str = Field("score", description="The column holding the scores (parquet, CSV).")
        aggregate: Literal["mean", "fraction_positive"] = Field(
            "mean", description="How an anchors × candidates `.npy` matrix becomes one score per candidate: the "
                                "mean over anchors, or the fraction of anchors with a positive value."
        )

    def score(self, task: ValuationTask) -> Scores:
        path = Path(self.config.path)
        ids = [c.id for c in task.candidates]
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if self.config.key != "position":
                raise InputError(f"{path}: a .npy file has no ids; set key: position in the spec")
            return self._positional(task, path, array)
        frame = self._read_table(path)
        if self.config.key == "position":
            return self._positional(task, path, frame[self.config.score_column].to_numpy())
        return self.scores(task, _finite(path, ids, self._by_id(path, frame, ids)))

    def _read_table(self, path: Path):
        import polars as pl

        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pl.read_csv(path, schema_overrides={self.config.id_column: pl.String})
        else:
            raise InputError(f"{path}: unknown scores format {path.suffix!r}; use .parquet, .csv or .npy")
        needed = [self.config.score_column] + ([self.config.id_column] if self.config.key == "id" else [])
        for column in needed:
            if column not in frame.columns:
                raise InputError(
                    f"{path}: no column {column!r}; columns are {', '.join(frame.columns)} "
                    f"(set id_column / score_column in the spec)"
                )
        if not frame[self.config.score_column].dtype.is_numeric():
            raise InputError(f"{path}: column {self.config.score_column!r} is not numeric; point score_column at "
                             f"the scores' column")
        return frame

    def _by_id(self, path: Path, frame, ids: list[str]) -> np.ndarray:
        file_ids = frame[self.config.id_column].cast(str).to_list()
        seen: dict[str, int] = {}
        for row, candidate in enumerate(file_ids):
            if candidate in seen:
                raise InputError(
                    f"{path}: candidate id {candidate!r} appears twice (rows {seen[candidate] + 1} and "
                    f"{row + 1}); keep one score per candidate"
                )
            seen[candidate] = row
        missing = [c for c in ids if c not in seen]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise InputError(
                f"{path}: no score for {len(missing)} of {len(ids)} candidates (first: {shown}); "
                f"score every candidate, or check id_column"
            )
        scores = frame[self.config.score_column].cast(float).to_numpy()
        return scores[[seen[c] for c in ids]]

    def _positional(self, task: ValuationTask, path: Path, array: np.ndarray) -> Scores:
        size = len(task.candidates)
        if array.ndim not in (1, 2) or array.shape[-1] != size:
            raise InputError(
                f"{path}: holds an array of shape {array.shape}, but the pool has {size} candidates; "
                f"expected ({size},) or (anchors, {size})"
            )
        ids = [c.id for c in task.candidates]
        if array.ndim == 1:
            return self.scores(task, _finite(path, ids, array))
        if array.shape[0] != len(task.anchors):
            raise InputError(
                f"{path}: has {array.shape[0]} anchor rows, but the spec has {len(task.anchors)} anchors"
            )
        _finite(path, ids, array.min(axis=0) + array.max(axis=0))
        return self.scores(task, over_anchors(array, self.config.aggregate), per_anchor=array)


def _finite(path: Path, ids: list[str], values: np.ndarray) -> np.ndarray:
    """``values``, refused with the first offending candidate if any is NaN or infinite."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    if bad.size:
        raise InputError(f"{path}: {bad.size} score(s) are NaN or infinite (first: candidate {ids[bad[0]]!r}, "
                         f"position {bad[0]}); give every candidate a finite score")
    return values


@hookimpl
def dvbench_register_valuators(register):
    register(FileValuator)
