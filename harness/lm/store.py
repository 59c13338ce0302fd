"""A store of projected candidate gradients on disk, and its products with anchors' (``grad_store``).

The store is one row of projected gradients per candidate (:mod:`~dvbench.harness.lm.projection`),
``(M, K)`` with ``K = Σ_layers k_out·k_in``, kept as shards of consecutive candidates: one
``.npy`` file each in the valuator's work folder, written atomically with its SHA-256 and read
back memory-mapped once its hash matches (:class:`GradientStore`), so a pool of 10,000 rows
is never loaded at once and an interrupted build resumes from its finished shards.

Scoring reads the shards one at a time:

- ``normalize``: every row (the anchors' too) divided by its norm over all tracked layers, so
  products are cosines (a zero row stays zero);
- ``damping_factor`` (the Gauss–Newton preconditioner): per layer ``l``, the candidates' second
  moment ``F_l = Φ_lᵀΦ_l / M`` of their (normalized, when asked) projected gradients, damped by
  ``λ_l = damping_factor · tr(F_l) / k_l`` (its mean eigenvalue), applied to the anchors:
  ``ã_l = (F_l + λ_l I)⁻¹ a_l``. Block-diagonal over layers, as LoGra's per-module curvature;
  one ``k_l × k_l`` solve per layer, in float64;
- the product ``Ã Φᵀ``, ``(N, M)`` in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvbench.harness.work import Shards


class GradientStore(Shards):
    """Shards of ``{"rows": (m, K)}`` saved as verified ``.npy`` files and read back memory-mapped."""

    def get(self, name: str) -> dict[str, Any] | None:
        return self.read(f"{name}.npy", lambda path: {"rows": np.load(path, mmap_mode="r", allow_pickle=False)})

    def put(self, name: str, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Save the shard; return it as read back from disk (memory-mapped), so a freshly built
        store is held no more than a reused one and scores the same bits."""
        self.write(f"{name}.npy", lambda tmp: _save(tmp, arrays["rows"]))
        return dict(arrays) if self.folder is None else self.get(name)


def _save(path: Path, rows: np.ndarray) -> None:
    with path.open("wb") as handle:  # np.save(path) would append ".npy" to the temporary name
        np.save(handle, np.ascontiguousarray(rows), allow_pickle=False)


def offsets(dims: Mapping[str, int]) -> dict[str, slice]:
    """Each layer's columns in a row, from the layers' sizes in order."""
    spans, start = {}, 0
    for name, k in dims.items():
        spans[name] = slice(start, start + k)
        start += k
    return spans


def pair_products(anchors: np.ndarray, shards: Sequence[np.ndarray], spans: Mapping[str, slice], *,
                  normalize: bool, damping_factor: float | None) -> np.ndarray:
    """The ``(N, M)`` products of the anchors' rows with the store's (see the module's
    docstring); ``damping_factor=None``: no preconditioner."""
    a = _unit(anchors.astype(np.float64)) if normalize else anchors.astype(np.float64)
    if damping_factor is not None:
        moments = {name: 0.0 for name in spans}
        for shard in shards:  # one pass over the store, every layer's moment at once
            rows = _rows(shard, normalize)
            for name, span in spans.items():
                moments[name] = moments[name] + rows[:, span].T @ rows[:, span]
        a = a.copy()
        for name, span in spans.items():
            moment = moments[name] / sum(len(s) for s in shards)
            damping = damping_factor * np.trace(moment) / moment.shape[0]
            if damping == 0:  # every candidate's rows are zero here: their products are zero anyway
                continue
            a[:, span] = np.linalg.solve(moment + damping * np.eye(moment.shape[0]), a[:, span].T).T
    return np.concatenate([a @ _rows(s, normalize).T for s in shards], axis=1)


def _rows(shard: np.ndarray, normalize: bool) -> np.ndarray:
    rows = np.asarray(shard, dtype=np.float64)
    return _unit(rows) if normalize else rows


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
