"""Anchors built by K-Means (data.anchors.kmeans): the pool rows nearest each centroid of the
pool's mean-pooled embeddings, recomputed here independently; padding-free pooling; the saved
artifact reused, and rebuilt when what produced it changes."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.cluster import KMeans

from dvbench.harness.config import ConfigError
from dvbench.harness.data.generated import generate
from dvbench.harness.lm.embed import mean_hidden
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec
from dvbench.harness.stages.anchors import nearest
from dvbench.harness.template import Template
from dvbench.harness.testing import tiny_lm

SPEC = """\
name: kmeans
seed: 3
model: {name: MODEL, dtype: float64}
template: {max_length: 48, max_answer_tokens: 24}
data:
  candidates: {path: pool.jsonl}
  anchors: {kmeans: KMEANS}
valuators:
  random: {use: random}
leaderboard: {bootstrap: 0}
"""


def _write_pool(folder, rows=30):
    pool = generate(rows, 0, 0, seed=2)["candidates"]
    (folder / "pool.jsonl").write_text("".join(json.dumps({"id": e.id, "instruction": e.instruction, "input": e.input,
                                                           "output": e.output}) + "\n" for e in pool))
    return pool


def _spec(folder, model, kmeans="{k: 4}"):
    path = folder / "kmeans.yaml"
    path.write_text(SPEC.replace("MODEL", str(model)).replace("KMEANS", kmeans))
    return path


def _run(path, out, **options):
    lines = []
    result = Runner(load_spec(path, **options), out, log=lines.append).run()
    return result, lines


def _unpadded_embedding(model, ids):
    """One example alone, no mask, no padding: the last layer's states averaged over its tokens."""
    with torch.no_grad():
        states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]
    return states[0].mean(0).numpy()


def test_the_anchors_are_the_pool_rows_nearest_each_centroid(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pool = _write_pool(tmp_path)
    _run(_spec(tmp_path, tiny_model_dir), tmp_path / "out")

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()
    encoder = Encoder(AutoTokenizer.from_pretrained(tiny_model_dir), Template(max_length=48, max_answer_tokens=24))
    embeddings = np.stack([_unpadded_embedding(model, encoder.zero_shot(e).ids) for e in pool])
    fitted = KMeans(n_clusters=4, init="k-means++", n_init=10, random_state=3).fit(embeddings)
    taken = []
    for centre in fitted.cluster_centers_:
        distance = np.linalg.norm(embeddings - centre, axis=1)
        distance[taken] = np.inf
        taken.append(int(np.argmin(distance)))
    expected = [pool[i].id for i in sorted(taken)]

    built = pl.read_parquet(next((tmp_path / "out/anchors").glob("kmeans-*.parquet")))
    assert built["id"].to_list() == expected
    assert built["position"].to_list() == sorted(taken)
    assert built["cluster_size"].sum() == len(pool)
    scored = pl.read_parquet(tmp_path / "out/scores/random.parquet")["candidate_id"].to_list()
    assert scored == [e.id for e in pool if e.id not in expected]  # the anchors left the candidates


def test_padding_does_not_change_the_embedding():
    """A batch of mixed lengths gives each example its one-at-a-time, unpadded embedding; the mean
    over the padded batch (Nuggets' pooling) would not."""
    model, tokenizer = tiny_lm("float64")
    encoder = Encoder(tokenizer)
    sequences = [encoder.zero_shot(e) for e in generate(7, 0, 0, seed=4)["candidates"]]
    assert len({len(s.ids) for s in sequences}) > 3
    alone = np.stack([_unpadded_embedding(model, s.ids) for s in sequences])
    for layer, batch_size in ((-1, 3), (-1, 7), (1, 7)):
        batched = mean_hidden(model, sequences, layer=layer, batch_size=batch_size)
        if layer == -1:
            np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-10)
        else:
            assert not np.allclose(batched, alone, atol=1e-3)  # another layer, other states
    ids = torch.zeros((len(sequences), max(len(s.ids) for s in sequences)), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, :len(s.ids)] = torch.tensor(s.ids)
    with torch.no_grad():
        padded = model(input_ids=ids, output_hidden_states=True).hidden_states[-1].mean(1).numpy()
    assert not np.allclose(padded, alone, atol=1e-3)


def test_a_layer_outside_the_model_is_refused_with_the_range():
    model, tokenizer = tiny_lm("float64")
    sequences = [Encoder(tokenizer).zero_shot(e) for e in generate(2, 0, 0)["candidates"]]
    with pytest.raises(Exception, match=r"data.anchors.kmeans.layer is 3, but the model has 3 hidden layers.*"
                                         r"\[-3, 2\]"):
        mean_hidden(model, sequences, layer=3)


def test_each_centroid_takes_the_nearest_row_no_earlier_centroid_took():
    distances = np.array([[0.1, 0.2, 5.0], [0.3, 0.1, 5.0], [4.0, 4.0, 4.0], [0.2, 0.3, 4.5]])
    assert nearest(distances).tolist() == [0, 1, 2]
    assert nearest(distances[:, [1, 0, 2]]).tolist() == [1, 0, 2]
    assert nearest(np.array([[1.0, 1.0], [1.0, 1.0]])).tolist() == [0, 1]  # ties: the first row


def test_a_rerun_reuses_the_anchors_and_a_changed_k_or_seed_rebuilds(tmp_path, tiny_model_dir):
    _write_pool(tmp_path)
    out = tmp_path / "out"
    _, first = _run(_spec(tmp_path, tiny_model_dir), out)
    built = sorted((out / "anchors").glob("kmeans-*.parquet"))
    assert len(built) == 1 and not any("reusing saved anchors" in line for line in first)
    anchors = pl.read_parquet(built[0])["id"].to_list()

    _, again = _run(_spec(tmp_path, tiny_model_dir), out, limit=10)  # --limit draws after the anchors
    assert f"anchors/{built[0].stem}: reusing saved anchors (up to date)" in again
    assert pl.read_parquet(out / "scores/random.parquet").height == 10
    assert not set(pl.read_parquet(out / "scores/random.parquet")["candidate_id"]) & set(anchors)

    _run(_spec(tmp_path, tiny_model_dir, "{k: 5}"), out)
    _run(_spec(tmp_path, tiny_model_dir, "{k: 4, seed: 11, batch_size: 2}"), out)
    _, same = _run(_spec(tmp_path, tiny_model_dir, "{k: 4, seed: 11}"), out)  # batch_size changes nothing
    assert any("reusing saved anchors" in line for line in same)
    files = sorted((out / "anchors").glob("kmeans-*.parquet"))
    assert len(files) == 3
    assert sorted(pl.read_parquet(f).height for f in files) == [4, 4, 5]


@pytest.mark.parametrize("kmeans", ["{k: 3, from: {path: other.jsonl}}", "{k: 3, keep_in_pool: true}"])
def test_a_separate_pool_or_keep_in_pool_leaves_the_candidates_whole(tmp_path, tiny_model_dir, kmeans):
    pool = _write_pool(tmp_path)
    (tmp_path / "other.jsonl").write_text((tmp_path / "pool.jsonl").read_text())
    _run(_spec(tmp_path, tiny_model_dir, kmeans), tmp_path / "out")
    assert pl.read_parquet(tmp_path / "out/scores/random.parquet")["candidate_id"].to_list() == [e.id for e in pool]
    assert pl.read_parquet(next((tmp_path / "out/anchors").glob("*.parquet"))).height == 3


def test_check_validates_the_option_without_loading_the_model(tmp_path, tiny_model_dir, dvbench, monkeypatch):
    from dvbench.harness.lm import models

    monkeypatch.setattr(models, "load_model", lambda ref: pytest.fail("check loaded the model"))
    _write_pool(tmp_path, rows=6)
    assert dvbench("check", _spec(tmp_path, tiny_model_dir)).returncode == 0
    result = dvbench("check", _spec(tmp_path, tiny_model_dir, "{k: 6}"))
    assert result.returncode == 2
    assert ("data.anchors.kmeans.k: 6 anchors cannot come from a pool of 6 rows and leave a candidate"
            in result.stderr)
    assert dvbench("check", _spec(tmp_path, tiny_model_dir, "{k: 6, keep_in_pool: true}")).returncode == 0


@pytest.mark.parametrize("kmeans, message", [
    ("{k: 0}", "data.anchors.kmeans.k (line 7): expected greater than or equal to 1"),
    ("{k: 2, from: cands}", "data.anchors.kmeans (line 7): 'from' is 'candidates' or a source ({path: ...} or "
                            "{dataset: ...}), not 'cands'"),
    ("{k: 2, from: {path: nope.jsonl}}", "data.anchors.kmeans.from.path (line 7): no such file"),
    ("{k: 2, from: {path: other.jsonl}, keep_in_pool: true}", "'keep_in_pool' applies to 'from: candidates'"),
    ("{k: 2, frm: candidates}", "unknown key 'frm'; allowed: k, from, seed, layer, batch_size, keep_in_pool"),
])
def test_bad_kmeans_options_name_the_key(tmp_path, kmeans, message):
    _write_pool(tmp_path, rows=4)
    (tmp_path / "other.jsonl").write_text((tmp_path / "pool.jsonl").read_text())
    with pytest.raises(ConfigError) as error:
        load_spec(_spec(tmp_path, "tiny", kmeans))
    assert message in str(error.value)


def test_kmeans_replaces_the_anchor_file(tmp_path):
    _write_pool(tmp_path, rows=4)
    path = tmp_path / "kmeans.yaml"
    path.write_text(SPEC.replace("MODEL", "tiny").replace("{kmeans: KMEANS}", "{kmeans: {k: 2}, path: pool.jsonl}"))
    with pytest.raises(ConfigError, match=r"data.anchors \(line 7\): 'kmeans' builds the anchors; remove 'path'"):
        load_spec(path)
