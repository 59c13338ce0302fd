"""The store's JSON: valid JSON whatever the numbers (NaN and infinity as null), read back by a
parser that refuses JavaScript's constants."""

import json
import math

import numpy as np

from dvbench.harness.artifacts import ArtifactStore, canonical


def strict(text):
    """RFC 8259 JSON only: ``NaN``, ``Infinity`` and ``-Infinity`` are refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_metrics_are_written_as_null_and_parse_strictly(tmp_path):
    store, producer = ArtifactStore(tmp_path), {"plugin": "loss", "threshold": float("nan")}
    metrics = {"all": {"loss": float("nan"), "max": math.inf, "min": -math.inf, "mean": 1.5, "n": np.int64(3),
                       "p": np.float32(0.25), "nan64": np.float64("nan"), "values": np.array([1.0, np.nan])}}
    store.save_json("evaluations/loss/m", producer, metrics, beside={"rows.json": [{"x": float("nan")}]})
    expected = {"all": {"loss": None, "max": None, "min": None, "mean": 1.5, "n": 3, "p": 0.25, "nan64": None,
                        "values": [1.0, None]}}
    assert strict((tmp_path / "evaluations/loss/m.metrics.json").read_text()) == expected
    assert strict((tmp_path / "evaluations/loss/m.rows.json").read_text()) == [{"x": None}]
    record = strict((tmp_path / "evaluations/loss/m.json").read_text())
    assert record["producer"]["threshold"] is None and set(record["files"]) == {".metrics.json", ".rows.json"}
    # the producer as written is the producer as given: the artifact is reused, not recomputed
    assert store.load_json("evaluations/loss/m", producer)[0] == expected
    assert canonical(producer) == canonical(record["producer"])

    (tmp_path / "evaluations/loss/m.rows.json").write_text("[]\n")  # the record vouches for the file beside
    assert store.load_json("evaluations/loss/m", producer) == (None, "m.rows.json is missing or changed since it "
                                                                      "was written")


def test_scores_stats_are_strict_json(tmp_path):
    from dvbench.harness.records import Scores

    scores = Scores(("a", "b"), np.array([1.0, 2.0]), "v", "1", {}, stats={"ratio": float("nan"), "ties": 1})
    ArtifactStore(tmp_path).save_scores("scores/v", {"plugin": "v"}, scores)
    assert strict((tmp_path / "scores/v.stats.json").read_text()) == {"ratio": None, "ties": 1}
