"""The specs we ship validate, and the quickstart runs."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec

SPECS = sorted((Path(__file__).parents[1] / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_spec_validates(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    if path.stem.startswith("paper"):  # the paper's comparison, bins, fine-tuning and both evaluations
        assert {u.plugin.name for u in spec.valuators.values()} == {"icp", "grad_ip", "ekfac", "one_step", "random"}
        assert [u.plugin.name for u in spec.selection.values()] == ["score_bins"]
        assert {u.plugin.name for u in spec.evaluation.values()} == {"loss", "win_rate"}
    if path.stem == "baselines":  # the paper's valuators beside the baselines, on the ground truth only
        paper = load_spec(path.with_name("paper.yaml"))
        assert {"bm25", "repsim"} <= {u.plugin.name for u in spec.valuators.values()}
        ours, theirs = spec.resolved(), paper.resolved()
        assert {label: ours["valuators"][label] for label in theirs["valuators"]} == theirs["valuators"]
        for key in ("seed", "model", "template", "tracked", "data", "ground_truth"):
            assert ours[key] == theirs[key], key
        assert ours["training"]["finetune"] == {**theirs["training"]["finetune"], "selections": []}
        assert not spec.selection and not spec.evaluation


def _tiny_paper(folder: Path, model: Path) -> Path:
    """specs/paper.yaml with the tiny model in place of the embedded one (also as judge), its
    tracked layers and fine-tuning restricted to the tiny model's last MLP, and smaller: 32 candidates (every bin
    still holds some), 4 eval rows, 8 new tokens per response, a bank of 3 subsets and one
    random removal."""
    data = yaml.safe_load((SPECS[[p.name for p in SPECS].index("paper.yaml")]).read_text())
    data["model"] = {"name": str(model)}
    data["data"]["generated"].update(candidates=32, eval=4)
    data["training"]["finetune"]["trainable"] = data["tracked"] = r"layers\.1\.mlp"
    data["evaluation"]["win_rate"]["judge_model"] = str(model)
    data["evaluation"]["win_rate"]["max_new_tokens"] = 8
    data["ground_truth"].update(subsets=3, random_removals=1)
    (folder / "paper.yaml").write_text(yaml.safe_dump(data))
    return folder / "paper.yaml"


def test_paper_spec_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dir):
    """Every table and plot of the paper's pipeline is written; a second run into another folder
    writes the same bytes in every file (run.json differs only in its timings, peaks, start and finish)."""
    spec = _tiny_paper(tmp_path, tiny_model_dir)
    result = Runner(load_spec(spec), tmp_path / "out", log=lambda line: None).run()
    tables = {p.stem for p in (tmp_path / "out/leaderboard").glob("*.parquet")}
    assert tables == {"spearman", "overlap", "spearman_per_anchor", "defect_auc", "selection_overlap",
                      "evaluation_loss", "evaluation_win_rate", "fact_attribution", "lds", "removal"}
    assert {p.name for p in (tmp_path / "out/leaderboard/plots").iterdir()} == {"spearman.png", "scatter.png",
                                                                              "overlap.png", "lds.png", "removal.png"}
    bins = result.tables["selection_overlap"]
    assert set(bins["subset"]) == {"<=0.5", ">0.5", ">0.6", ">0.65", ">0.7"}
    win = result.tables["evaluation_win_rate"].filter(pl.col("eval_subset") == "all")
    assert win["win_rate"].is_between(0, 100).all() and win["standard_error"].is_not_null().all()

    Runner(load_spec(spec), tmp_path / "again", log=lambda line: None).run()
    first, second = (_files(tmp_path / name) for name in ("out", "again"))
    assert set(first) == set(second) and len(first) > 150
    assert [name for name in first if first[name] != second[name]] == ["run.json"]
    runs = [json.loads(files["run.json"]) for files in (first, second)]
    for run in runs:
        for key in ("timings_s", "valuator_seconds", "valuator_peak_rss_mb", "valuator_peak_cuda_allocated_mb",
                    "started", "finished"):
            del run[key]
    assert runs[0] == runs[1]
    for name in first:  # every JSON file is valid JSON (no NaN, no Infinity)
        if name.endswith(".json"):
            json.loads(first[name], parse_constant=lambda constant: pytest.fail(f"{name} holds {constant}"))
    win_rate = [name for name in first if name.startswith("evaluations/win_rate/")]
    measured = {name.removesuffix(".metrics.json") for name in win_rate if name.endswith(".metrics.json")}
    for kept in ("model_outputs", "reference_outputs", "annotations"):  # beside every model's metrics
        assert {name.removesuffix(f".{kept}.json") for name in win_rate if name.endswith(f".{kept}.json")} == measured
    assert measured


@pytest.mark.slow
def test_baselines_ranks_every_valuator_on_every_ground_truth_table(tmp_path, tiny_model_dir):
    """specs/baselines.yaml on the tiny model, tracking and training its last MLP, its bank cut to 3
    subsets and one random removal: about a minute."""
    data = yaml.safe_load((SPECS[[p.name for p in SPECS].index("baselines.yaml")]).read_text())
    data["model"] = {"name": str(tiny_model_dir)}
    data["training"]["finetune"]["trainable"] = data["tracked"] = r"layers\.1\.mlp"
    data["ground_truth"].update(subsets=3, random_removals=1)
    (tmp_path / "baselines.yaml").write_text(yaml.safe_dump(data))
    result = Runner(load_spec(tmp_path / "baselines.yaml"), tmp_path / "out", log=lambda line: None).run()
    labels = set(data["valuators"])
    for table in ("lds", "removal", "defect_auc"):
        assert set(result.tables[table]["valuator"]) == labels, table
    assert set(result.tables["fact_attribution"]["valuator"]) == labels - {"random"}  # no per-anchor matrix
    assert not {"evaluation_loss", "evaluation_win_rate", "selection_overlap"} & set(result.tables)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def on_tiny_model(path: Path, folder: Path, model: Path) -> Path:
    """A copy of the spec at ``path`` in ``folder``, on the tiny test model instead of its own."""
    data = yaml.safe_load(path.read_text())
    data["model"] = {**data.get("model", {}), "name": str(model)}
    copy = folder / path.name
    copy.write_text(yaml.safe_dump(data))
    return copy


def test_quickstart_runs(tmp_path, tiny_model_dir):
    spec = on_tiny_model(SPECS[[p.name for p in SPECS].index("quickstart.yaml")], tmp_path, tiny_model_dir)
    result = Runner(load_spec(spec), tmp_path / "out", log=lambda line: None).run()
    assert set(result.scores) == {"icp", "icp-mean", "random"}
    assert len(list((tmp_path / "out" / "work").glob("icp-*"))) == 1  # both ICP entries share one computation
    icp, mean = result.scores["icp"], result.scores["icp-mean"]
    assert icp.values.tolist() == (icp.per_anchor > 0).mean(axis=0).tolist()
    assert mean.values.tolist() == mean.per_anchor.mean(axis=0).tolist()
    selections = pl.read_parquet(tmp_path / "out/selections/top10.parquet")
    assert selections.group_by("valuator").len()["len"].to_list() == [6, 6, 6]

    notes = []
    again = Runner(load_spec(spec), tmp_path / "out", log=notes.append).run().scores["icp"]
    assert sum("reusing saved scores" in n for n in notes) == 3
    assert again.stats == icp.stats and set(again.details) == set(icp.details)
    assert all(np.array_equal(again.details[k], icp.details[k]) for k in icp.details)


@pytest.mark.slow
def test_quickstart_runs_on_the_embedded_model(tmp_path):
    result = Runner(load_spec(SPECS[[p.name for p in SPECS].index("quickstart.yaml")]), tmp_path,
                    log=lambda line: None).run()
    assert result.model.identity["source"] == "embedded" and result.model.identity["fingerprint"].startswith("gguf-sha256:")
    assert result.model.tokens["candidates"]["examples"] == 64 and result.scores["icp"].stats["pairs"] == 512


@pytest.mark.slow
def test_paper_runs_on_the_embedded_model(tmp_path):
    """The whole of specs/paper.yaml, as shipped: about eleven minutes on two CPU cores."""
    result = Runner(load_spec(SPECS[[p.name for p in SPECS].index("paper.yaml")]), tmp_path,
                    log=lambda line: None).run()
    assert set(result.scores) == {"icp", "grad_ip", "ekfac", "one_step", "random"}
    assert {"evaluation_loss", "evaluation_win_rate", "selection_overlap", "defect_auc"} <= set(result.tables)
    assert len(list((tmp_path / "leaderboard/plots").iterdir())) == 3
    assert (result.tables["evaluation_loss"].filter(pl.col("eval_subset") == "all")["delta"] != 0).all()
