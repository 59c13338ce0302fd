"""The specs we ship validate, and the quickstart runs."""

from pathlib import Path

import polars as pl
import pytest

from dvbench.harness.runner import Runner
from dvbench.harness.spec import load_spec

SPECS = sorted((Path(__file__).parents[1] / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_spec_validates(path):
    assert load_spec(path).name == path.stem


def test_quickstart_runs(tmp_path):
    result = Runner(load_spec(SPECS[[p.name for p in SPECS].index("quickstart.yaml")]), tmp_path,
                    log=lambda line: None).run()
    assert set(result.scores) == {"random-a", "random-b"}
    selections = pl.read_parquet(tmp_path / "selections/top10.parquet")
    assert selections.group_by("valuator").len()["len"].to_list() == [30, 30]
