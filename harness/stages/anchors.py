"""The anchors step, between the data and the model stages: with ``data.anchors.kmeans``, the
anchors built from a pool as the paper's K-Means-100 were (Nuggets, Li et al. 2024b), then
``--limit`` applied to the candidates; without it, the data pass through.

    anchors/kmeans-<key>.parquet  the chosen pool rows, in pool order: position (in the pool), id,
                                  instruction, input, output, subset, cluster, cluster_size, distance
    anchors/kmeans-<key>.json     what produced them

Building (docs/definitions.md § Data):

1. every pool row in its zero-shot form (``[BOS] header query answer [EOS]``, the template's
   truncation included: the sequence every scorer sees) is embedded as the mean of the model's
   hidden states at ``layer`` over its own tokens (:mod:`~dvbench.harness.lm.embed`; Nuggets
   averaged over padding too, which made an embedding depend on its batch);
2. scikit-learn's ``KMeans`` clusters the embeddings into ``k`` clusters (k-means++,
   :data:`N_INIT` initialisations, ``random_state`` the seed);
3. each centroid, in cluster order, takes the pool row nearest it (Euclidean) that no earlier
   centroid took, so the ``k`` anchors are distinct real rows.

``<key>`` is 16 hex digits of the SHA-256 of the producer: the pool's fingerprint, the model's
identity, the template, ``k``, the seed, the layer, the pooling, :data:`N_INIT`, scikit-learn's
version and this step's :data:`VERSION` (not the batch size, which changes nothing). A rerun
reads the saved rows back; a change to any of those builds another file.

With ``from: candidates`` the anchors then leave the candidates (unless ``keep_in_pool``), so no
anchor is also valued as a candidate; a separate pool leaves the candidates as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, replace

import numpy as np

from dvbench.harness.artifacts import canonical, fingerprint
from dvbench.harness.records import Example
from dvbench.harness.schema import KMeansAnchors
from dvbench.harness.spec import Spec
from dvbench.harness.stages.context import RunContext
from dvbench.harness.stages.data import Data, limited
from dvbench.harness.stages.model import identity

VERSION = "1"
N_INIT = 10  # K-Means initialisations; the one of least inertia is kept
POOLING = "mean over each example's own tokens"


def built_anchors(spec: Spec) -> KMeansAnchors | None:
    """The spec's ``data.anchors.kmeans``, if its anchors are built."""
    anchors = spec.settings.data.anchors
    return None if anchors is None else anchors.kmeans


def build_anchors(ctx: RunContext, data: Data, device: str = "cpu") -> Data:
    """``data`` with its K-Means anchors built (or read back; the model on ``device``) and
    ``--limit`` applied, if the spec builds them; else ``data``."""
    kmeans = built_anchors(ctx.spec)
    if kmeans is None:
        return data
    anchors = _anchors(ctx, kmeans, data.pool, device)
    candidates = data.candidates
    if kmeans.from_ is None and not kmeans.keep_in_pool:
        taken = {a.id for a in anchors}
        candidates = tuple(c for c in candidates if c.id not in taken)
        ctx.log(f"anchors: the {len(anchors)} anchors leave the candidates ({len(candidates)} remain)")
    return limited(replace(data, candidates=candidates, anchors=anchors, pool=()), ctx.spec.limit, ctx.seed,
                   ctx.log)


def _anchors(ctx: RunContext, kmeans: KMeansAnchors, pool: tuple[Example, ...], device: str) -> tuple[Example, ...]:
    """The saved anchors of this producer, else built and saved."""
    import polars as pl
    import sklearn

    from dvbench.harness.lm import models

    ref = ctx.spec.settings.model.ref(device)
    seed = ctx.seed if kmeans.seed is None else kmeans.seed
    producer = {"step": "kmeans_anchors", "version": VERSION, "pool": fingerprint(pool),
                "model": identity(ref, models.resolve(ref).fingerprint), "template": asdict(ctx.spec.template), "k": kmeans.k,
                "seed": seed, "layer": kmeans.layer, "pooling": POOLING, "n_init": N_INIT,
                "scikit-learn": sklearn.__version__}
    name = f"anchors/kmeans-{hashlib.sha256(canonical(producer).encode()).hexdigest()[:16]}"
    files, why = ctx.store.find(name, producer)
    by_id = {e.id: e for e in pool}
    if files is not None:
        ctx.log(f"{name}: reusing saved anchors ({why})")
        return tuple(by_id[i] for i in pl.read_parquet(files[".parquet"])["id"])
    if why != "not computed yet":
        ctx.log(f"{name}: building again, {why}")
    rows = _build(ctx, ref, kmeans, pool, seed)
    ctx.store.save(name, producer, {".parquet": pl.DataFrame(rows).write_parquet})
    return tuple(pool[i] for i in rows["position"])


def _build(ctx: RunContext, ref, kmeans: KMeansAnchors, pool: tuple[Example, ...], seed: int) -> dict[str, list]:
    """The anchors' rows (the artifact's columns): each pool row embedded, clustered, and the
    row nearest each centroid."""
    from dvbench.harness.lm.embed import mean_hidden
    from dvbench.harness.lm.models import load_model
    from dvbench.harness.lm.tokens import Encoder

    model, tokenizer = load_model(ref)
    encoder = Encoder(tokenizer, ctx.spec.template)
    sequences = [encoder.zero_shot(e) for e in pool]
    with ctx.progress.task("anchors: embedding the pool", len(pool), "rows") as advance:
        embeddings = mean_hidden(model, sequences, layer=kmeans.layer, batch_size=kmeans.batch_size, advance=advance)
    del model
    ctx.log(f"anchors: K-Means of {len(pool)} embeddings into {kmeans.k} clusters (seed {seed})")
    labels, distances = cluster(embeddings, kmeans.k, seed)
    chosen = nearest(distances)
    order = np.argsort(chosen)
    sizes = np.bincount(labels, minlength=kmeans.k)
    return {"position": chosen[order].tolist(), "id": [pool[i].id for i in chosen[order]],
            **{key: [getattr(pool[i], key) for i in chosen[order]] for key in ("instruction", "input", "output", "subset")},
            "cluster": order.tolist(), "cluster_size": sizes[order].tolist(),
            "distance": distances[chosen[order], order].tolist()}


def cluster(embeddings: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cluster and its distances to the ``k`` centroids, ``(rows, k)``: scikit-learn's
    KMeans (k-means++, :data:`N_INIT` initialisations, ``random_state=seed``)."""
    from sklearn.cluster import KMeans

    fitted = KMeans(n_clusters=k, init="k-means++", n_init=N_INIT, random_state=seed).fit(embeddings)
    return fitted.labels_, fitted.transform(embeddings)


def nearest(distances: np.ndarray) -> np.ndarray:
    """For each centroid in order (a column of ``distances``), the row nearest it that no earlier
    centroid took (the first such row on a tie)."""
    taken = np.zeros(distances.shape[0], dtype=bool)
    chosen = []
    for column in distances.T:
        row = int(np.argmin(np.where(taken, np.inf, column)))
        taken[row] = True
        chosen.append(row)
    return np.array(chosen, dtype=np.int64)
