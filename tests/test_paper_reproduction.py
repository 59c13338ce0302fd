"""The paper's headline agreement, reproduced from its released scores (../shared/paper) by a spec
run: ICP vs Infl_IP Spearman 0.729 and the >0.8 ICP bin's overlap of 71% (section 5, Figure 1c).

The release's candidate texts are not public, so the pool is 52,002 placeholder rows in the
release's order; both valuators are the ``file`` valuator (``key: position``), Infl_IP's
per-anchor matrix aggregated by its mean over the K-Means-100 anchors.
"""

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec

SHARED = Path(__file__).parents[1].parent / "shared"
pytestmark = pytest.mark.skipif(not (SHARED / "paper").is_dir(), reason="../shared/paper is not beside the project")


def test_paper_spearman_and_bin_overlap(tmp_path, tiny_model_dir):
    with (tmp_path / "pool.jsonl").open("w") as handle:
        for i in range(52002):
            handle.write(json.dumps({"id": f"release-{i:05d}", "instruction": f"row {i}", "output": "-"}) + "\n")
    spec = {
        "name": "paper-release",
        "model": {"name": str(tiny_model_dir)},
        "data": {"candidates": {"path": "pool.jsonl"},
                 "anchors": {"path": str(SHARED / "data/alpaca_gpt4/kmeans100_anchors.jsonl")}},
        "valuators": {"icp": {"use": "file", "path": str(SHARED / "paper/icp_scores.npy"), "key": "position"},
                      "infl_ip": {"use": "file", "path": str(SHARED / "paper/infl_ip_per_anchor.npy"),
                                  "key": "position", "aggregate": "mean"}},
        "selection": {"bins": {"use": "score_bins", "reference": "icp"}},
        "leaderboard": {"bootstrap": 50},  # intervals over 52,002 candidates: a few resamples keep it seconds
    }
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(spec))
    Runner(load_spec(tmp_path / "paper.yaml"), tmp_path / "out", log=lambda line: None).run()

    spearman = pl.read_parquet(tmp_path / "out/leaderboard/spearman.parquet").row(0, named=True)
    assert (spearman["a"], spearman["b"], round(spearman["rho"], 3)) == ("icp", "infl_ip", 0.729)
    bins = pl.read_parquet(tmp_path / "out/leaderboard/selection_overlap.parquet")
    above = bins.filter(pl.col("subset") == ">0.8").row(0, named=True)
    assert (above["k"], round(above["overlap"], 2)) == (20513, 0.71)
    assert bins["subset"].to_list() == ["<=0.5", ">0.5", ">0.8", ">0.85", ">0.9"]
