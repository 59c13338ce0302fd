import json
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dvbench.harness import provenance
from dvbench.harness.data.generated import generate
from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec

SPEC = """\
name: three
seed: 5
model: {name: MODEL}
data:
  generated: {candidates: 120, anchors: 4, eval: 0}
valuators:
  rand-1: {use: random, seed: 1}
  rand-2: {use: random, seed: 2}
  from-file: {use: file, path: scores.csv}
selection:
  top: {use: top_k, k: 10}
leaderboard:
  overlap_fractions: [0.1, 0.25]
"""


@pytest.fixture
def spec_text(tiny_model_dir):
    return SPEC.replace("MODEL", str(tiny_model_dir))


@pytest.fixture
def spec_path(tmp_path, spec_text):
    ids = [c.id for c in generate(120, 4, 0, seed=5)["candidates"]]
    rng = np.random.default_rng(99)
    # Reversed file order and rounded scores: ids must be matched, and ties ordered by id.
    pl.DataFrame({"candidate_id": ids[::-1], "score": rng.integers(0, 20, len(ids)).astype(float)}).write_csv(
        tmp_path / "scores.csv")
    (tmp_path / "spec.yaml").write_text(spec_text)
    return tmp_path / "spec.yaml"


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def _naive_spearman(x, y):
    ranks = [np.argsort(np.argsort(v, kind="stable")).astype(float) for v in (x, y)]
    for r, v in zip(ranks, (x, y)):  # average ranks of ties
        for value in set(v.tolist()):
            r[v == value] = r[v == value].mean()
    return float(np.corrcoef(*ranks)[0, 1])


def _naive_top(ids, scores, k):
    return [i for _, i in sorted(zip(-scores, ids))][:k]


def test_run_writes_scores_and_a_leaderboard_we_recompute(spec_path, tmp_path):
    out = tmp_path / "out"
    Runner(load_spec(spec_path), out, log=lambda line: None).run()
    frames = {label: pl.read_parquet(out / f"scores/{label}.parquet") for label in ("rand-1", "rand-2", "from-file")}
    ids = frames["rand-1"]["candidate_id"].to_list()
    assert all(f["candidate_id"].to_list() == ids for f in frames.values())
    assert frames["rand-1"]["score"].to_list() == np.random.default_rng(1).random(120).tolist()
    given = pl.read_csv(tmp_path / "scores.csv", schema_overrides={"candidate_id": pl.String})
    by_id = dict(zip(given["candidate_id"], given["score"]))
    assert frames["from-file"]["score"].to_list() == [by_id[i] for i in ids]

    spearman = pl.read_parquet(out / "leaderboard/spearman.parquet")
    overlap = pl.read_parquet(out / "leaderboard/overlap.parquet")
    assert spearman.height == 3 and overlap.height == 6
    values = {label: f["score"].to_numpy() for label, f in frames.items()}
    for row in spearman.iter_rows(named=True):
        assert row["rho"] == pytest.approx(_naive_spearman(values[row["a"]], values[row["b"]]), abs=1e-12)
        assert 0.0 <= row["p_value"] <= 1.0
    for row in overlap.iter_rows(named=True):
        k = round(row["q"] * 120)
        a, b = (set(_naive_top(ids, values[row[s]], k)) for s in ("a", "b"))
        assert (row["k"], row["overlap"]) == (k, len(a & b) / k)
    assert (out / "leaderboard/overlap.csv").exists()
    assert (out / "leaderboard/spearman.md").read_text().startswith("| a | b | rho |")

    top = pl.read_parquet(out / "selections/top.parquet").filter(pl.col("valuator") == "from-file")
    assert top["candidate_id"].to_list() == _naive_top(ids, values["from-file"], 10)

    record = json.loads((out / "run.json").read_text(), parse_constant=_refuse)  # strict JSON: no NaN
    assert record["seed"] == 5 and record["spec"]["valuators"]["rand-2"] == {"use": "random", "seed": 2}
    assert set(record["timings_s"]) == {"data", "model", "valuation", "selection", "leaderboard"}
    assert record["plugins"]["valuators.from-file"]["plugin"] == "file"
    labels = {"rand-1", "rand-2", "from-file"}
    assert set(record["valuator_seconds"]) == set(record["valuator_peak_rss_mb"]) == labels
    assert all(mb > 10 for mb in record["valuator_peak_rss_mb"].values())  # this process's RSS, in MiB
    assert set(record["valuator_peak_cuda_allocated_mb"]) == labels
    assert record["versions"]["numpy"] == np.__version__ and record["versions"]["polars"] == pl.__version__
    assert record["versions"]["dvbench"] == metadata.version("dvbench")
    assert record["plugins"]["valuators.rand-1"]["distribution"] == {"name": "dvbench",
                                                                      "version": metadata.version("dvbench")}
    assert record["git"]["spec"] is None  # the spec lies in no git checkout
    source = Path(provenance.__file__).parent
    if record["git"]["dvbench"] is not None:  # dvbench runs from a checkout
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert record["git"]["dvbench"]["commit"] == head.stdout.strip()
    assert record["hardware"]["cores"] >= 1 and record["hardware"]["memory_gb"] > 0
    assert record["started"] <= record["finished"]


def test_saved_scores_are_reused_only_under_the_same_producer(spec_path, spec_text, tmp_path):
    out, notes = tmp_path / "out", []
    Runner(load_spec(spec_path), out, log=notes.append).run()
    first = (out / "scores/rand-1.parquet").read_bytes()

    notes.clear()
    Runner(load_spec(spec_path), out, log=notes.append).run()
    assert sum("reusing saved scores" in n for n in notes) == 3

    spec_path.write_text(spec_text.replace("seed: 1}", "seed: 7}"))
    notes.clear()
    Runner(load_spec(spec_path), out, log=notes.append).run()
    assert any("rand-1: recomputing, produced under other settings (config.seed: 1 -> 7)" in n for n in notes)
    assert (out / "scores/rand-1.parquet").read_bytes() != first
    assert sum("reusing" in n for n in notes) == 2


def test_a_changed_or_half_written_file_is_recomputed(spec_path, tmp_path):
    out, notes = tmp_path / "out", []
    Runner(load_spec(spec_path), out, log=notes.append).run()
    good = (out / "scores/rand-2.parquet").read_bytes()
    (out / "scores/rand-2.parquet").write_bytes(good[: len(good) // 2])
    notes.clear()
    Runner(load_spec(spec_path), out, log=notes.append).run()
    assert any("rand-2: recomputing, rand-2.parquet is missing or changed" in n for n in notes)
    assert (out / "scores/rand-2.parquet").read_bytes() == good


def test_data_change_invalidates_scores(spec_path, spec_text, tmp_path):
    out, notes = tmp_path / "out", []
    Runner(load_spec(spec_path), out, log=notes.append).run()
    spec_path.write_text(spec_text.replace("candidates: 120", "candidates: 100"))
    notes.clear()
    Runner(load_spec(spec_path), out, log=notes.append).run()
    recomputed = [n for n in notes if "recomputing, produced under other settings (candidates:" in n]
    assert len(recomputed) == 3 and pl.read_parquet(out / "scores/from-file.parquet").height == 100


def test_same_spec_and_seed_give_identical_artifacts(spec_path, tmp_path):
    for name in ("a", "b"):
        Runner(load_spec(spec_path), tmp_path / name, log=lambda line: None).run()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10
    for rel in files:
        if rel.name != "run.json":
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_the_model_and_template_are_part_of_what_produced_the_scores(spec_path, spec_text, tmp_path, tiny_model_dir):
    spec_text = spec_text.replace("valuators:\n", "valuators:\n  grad: {use: grad_ip}\n")
    spec_path.write_text(spec_text)
    out, notes = tmp_path / "out", []
    Runner(load_spec(spec_path), out, log=notes.append).run()
    record = json.loads((out / "run.json").read_text())
    assert record["model"]["source"] == str(tiny_model_dir) and record["model"]["fingerprint"]
    assert record["tokens"]["candidates"]["examples"] == 120 and record["tokens"]["anchors"]["truncated"] == {}
    assert json.loads((out / "scores/grad.json").read_text())["producer"]["model"] == record["model"]
    assert "model" not in json.loads((out / "scores/rand-1.json").read_text())["producer"]

    spec_path.write_text(spec_text + "template: {name: plain, max_length: 40, max_answer_tokens: 12}\n")
    notes.clear()
    Runner(load_spec(spec_path), out, log=notes.append).run()
    assert sum("recomputing, produced under other settings (template." in n for n in notes) == 4
    assert any(n.startswith("candidates: cut to fit template limits (") for n in notes)
    tokens = json.loads((out / "run.json").read_text())["tokens"]["candidates"]
    assert tokens["max_tokens"] <= 40 and tokens["truncated"]["query"] > 0


def test_a_spec_whose_roles_need_no_model_runs_without_one(spec_path, spec_text, tmp_path, monkeypatch):
    """random and file valuators with top_k: no model is resolved, so a missing model folder is no error."""
    from dvbench.harness.lm import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was resolved")

    monkeypatch.setattr(models, "resolve", refuse)
    spec_path.write_text(spec_text.replace(spec_text.splitlines()[2], "model: {name: ./no-such-model}"))
    out = tmp_path / "out"
    result = Runner(load_spec(spec_path), out, log=lambda line: None).run()
    record = json.loads((out / "run.json").read_text())
    assert record["model"] is None and record["tokens"] == {}
    assert set(result.scores) == {"rand-1", "rand-2", "from-file"} and "spearman" in result.tables


def test_a_rerun_keeps_unchanged_tables_and_plots_and_draws_a_missing_plot_again(spec_path, tmp_path):
    out = tmp_path / "out"
    Runner(load_spec(spec_path), out, log=lambda line: None).run()
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "leaderboard").rglob("*") if p.is_file()}
    assert (out / "leaderboard/plots/overlap.png") in kept
    Runner(load_spec(spec_path), out, log=lambda line: None).run()
    assert all((p.read_bytes(), p.stat().st_mtime_ns) == before for p, before in kept.items())
    (out / "leaderboard/plots/overlap.png").unlink()
    Runner(load_spec(spec_path), out, log=lambda line: None).run()
    assert (out / "leaderboard/plots/overlap.png").read_bytes() == kept[out / "leaderboard/plots/overlap.png"][0]
