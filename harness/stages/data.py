"""The data stage: the spec's candidates, anchors and eval set, from generated data, files or
the hub; the pool cut to ``--limit`` candidates. Anchors built by K-Means
(``data.anchors.kmeans``) are not read here: their pool is, and the anchors step
(:mod:`~dvbench.harness.stages.anchors`) builds them and then applies ``--limit``. Writes nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dvbench.harness.data.files import load_examples
from dvbench.harness.data.generated import generate
from dvbench.harness.data.hf import NotCached, load_hub_examples
from dvbench.harness.errors import InputError
from dvbench.harness.network import downloads_allowed
from dvbench.harness.records import Example
from dvbench.harness.spec import Spec


@dataclass(frozen=True)
class Data:
    candidates: tuple[Example, ...]
    anchors: tuple[Example, ...] = ()
    eval: tuple[Example, ...] = ()
    pool: tuple[Example, ...] = ()  # what K-Means anchors are built from, until the anchors step builds them


def load_data(spec: Spec, log=print, download: bool = True) -> Data:
    """The spec's candidates, anchors and eval set (eval rows need no output), the candidates
    limited to ``spec.limit`` (:func:`limited`). Every split is read before an error is raised,
    and the error names the bad rows of each. Without ``download`` (``dvbench check``) a hub
    dataset is read from the local cache only; one not cached there whose downloads are allowed
    is left empty, and said so in the log, since a run would download it."""
    section = spec.settings.data
    if section.generated is not None:
        g = section.generated
        splits = generate(g.candidates, g.anchors, g.eval, defect_fraction=g.defect_fraction,
                          families=tuple(g.families), seed=spec.settings.seed if g.seed is None else g.seed,
                          facts=g.facts)
        return limited(Data(**splits), spec.limit, spec.settings.seed, log)

    errors = []

    def examples(source, require_output=True):
        if source is None:
            return ()
        try:
            if source.dataset is None:
                return load_examples(source.path, split=source.split, require_output=require_output)
            return load_hub_examples(source.dataset, split=source.split or "train", config=source.config,
                                     revision=source.revision, allow_download=source.allow_download,
                                     cached_only=not download, require_output=require_output)
        except NotCached as error:
            if download or not downloads_allowed(source.allow_download):
                errors.append(str(error))
            else:
                log(f"hub dataset {source.dataset}: not in the local datasets cache, so not read; a run "
                    f"downloads it")
            return ()
        except InputError as error:
            errors.append(str(error))
            return ()

    kmeans = section.anchors.kmeans if section.anchors is not None else None
    candidates = examples(section.candidates)
    data = Data(candidates=candidates, anchors=examples(None if kmeans else section.anchors),
                eval=examples(section.eval, require_output=False))
    if kmeans is not None:
        data = replace(data, pool=candidates if kmeans.from_ is None else examples(kmeans.from_))
        errors += _room_for_anchors(kmeans, data)
    if errors:
        raise InputError("\n".join(errors))
    return data if kmeans is not None else limited(data, spec.limit, spec.settings.seed, log)


def _room_for_anchors(kmeans, data: Data) -> list[str]:
    """Why the pool cannot give ``kmeans.k`` anchors (and, when the anchors leave the candidates,
    keep one candidate), if it cannot; nothing when the pool is not read (a hub dataset ``dvbench
    check`` does not download)."""
    taken = kmeans.from_ is None and not kmeans.keep_in_pool
    if not data.pool or len(data.pool) >= kmeans.k + taken:
        return []
    left = " and leave a candidate (the anchors leave the candidates)" if taken else ""
    return [f"data.anchors.kmeans.k: {kmeans.k} anchors cannot come from a pool of {len(data.pool)} rows{left}; "
            f"lower k or give a larger pool"]


def limited(data: Data, limit: int | None, seed: int, log=print) -> Data:
    """The first ``limit`` candidates of a permutation drawn by ``default_rng(seed)``, in their
    order in the pool (so a smaller limit keeps a subset of a larger one's); anchors' planted
    facts keep only the supporting candidates still in the pool. A limit at or above the pool's
    size keeps every candidate, and says so."""
    pool = len(data.candidates)
    if limit is None:
        return data
    if limit >= pool:
        log(f"--limit {limit}: the pool holds {pool} candidates; all are kept")
        return data
    kept = np.sort(np.random.default_rng(seed).permutation(pool)[:limit])
    candidates = tuple(data.candidates[i] for i in kept)
    ids = {c.id for c in candidates}
    anchors = tuple(replace(a, meta={**a.meta, "supported_by": [c for c in a.meta["supported_by"] if c in ids]})
                    if "supported_by" in a.meta else a for a in data.anchors)
    log(f"--limit {limit}: {limit} of {pool} candidates, drawn by seed {seed}")
    return replace(data, candidates=candidates, anchors=anchors)
