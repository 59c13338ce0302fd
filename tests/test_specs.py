"""The specs we ship validate, and the quickstart runs."""

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
    assert load_spec(path).name == path.stem


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
    assert result.model["source"] == "embedded" and result.model["fingerprint"].startswith("gguf-sha256:")
    assert result.tokens["candidates"]["examples"] == 64 and result.scores["icp"].stats["pairs"] == 512
