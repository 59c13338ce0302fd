import numpy as np
import polars as pl
import pytest

from dvbench.harness.errors import InputError
from dvbench.harness.testing import check_valuator, tiny_task
from dvbench.plugins.valuators.file import FileValuator
from dvbench.plugins.valuators.random import RandomValuator


def test_random_is_seeded_uniform():
    task = tiny_task(seed=4)
    scores = check_valuator(RandomValuator, task=task)
    assert scores.values.tolist() == np.random.default_rng(4).random(24).tolist()
    other = check_valuator(RandomValuator, RandomValuator.Config(seed=9), task=task)
    assert other.values.tolist() == np.random.default_rng(9).random(24).tolist()


def _file(tmp_path, **config):
    return FileValuator.Config.model_validate(config, context={"base_dir": tmp_path})


@pytest.fixture
def task():
    return tiny_task()


def _ids(task):
    return [c.id for c in task.candidates]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_reads_scores_by_id_in_any_row_order(tmp_path, task, suffix):
    ids = _ids(task)
    values = np.arange(len(ids), dtype=float) / 7
    frame = pl.DataFrame({"cid": ids[::-1] + ["not-in-pool"], "value": list(values[::-1]) + [1e9]})
    path = tmp_path / f"s{suffix}"
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    config = _file(tmp_path, path=path.name, id_column="cid", score_column="value")
    scores = check_valuator(FileValuator, config, task)
    assert scores.values.tolist() == values.tolist()


def test_reads_numpy_by_position_and_aggregates_a_matrix(tmp_path, task):
    vector = np.linspace(0, 1, len(task.candidates))
    np.save(tmp_path / "v.npy", vector)
    scores = check_valuator(FileValuator, _file(tmp_path, path="v.npy", key="position"), task)
    assert scores.values.tolist() == vector.tolist() and scores.per_anchor is None

    matrix = np.random.default_rng(0).normal(size=(len(task.anchors), len(task.candidates))).astype(np.float32)
    np.save(tmp_path / "m.npy", matrix)
    mean = check_valuator(FileValuator, _file(tmp_path, path="m.npy", key="position"), task)
    assert np.allclose(mean.values, matrix.astype(np.float64).mean(axis=0), rtol=0, atol=1e-15)
    assert mean.per_anchor.shape == matrix.shape
    positive = check_valuator(FileValuator, _file(tmp_path, path="m.npy", key="position",
                                                  aggregate="fraction_positive"), task)
    assert positive.values.tolist() == [(matrix[:, j] > 0).mean() for j in range(matrix.shape[1])]


@pytest.mark.parametrize("rows, config, message", [
    (lambda ids: {"candidate_id": ids[1:], "score": [0.0] * (len(ids) - 1)}, {},
     "no score for 1 of 24 candidates (first: 'candidate-00000')"),
    (lambda ids: {"candidate_id": ids + ids[:1], "score": [0.0] * (len(ids) + 1)}, {},
     "candidate id 'candidate-00000' appears twice (rows 1 and 25)"),
    (lambda ids: {"id": ids, "score": [0.0] * len(ids)}, {},
     "no column 'candidate_id'; columns are id, score"),
    (lambda ids: {"candidate_id": ids, "score": ["x"] * len(ids)}, {}, "column 'score' is not numeric"),
    (lambda ids: {"candidate_id": ids[:3], "score": [0.0] * 3}, {"key": "position"},
     "shape (3,), but the pool has 24 candidates"),
])
def test_bad_score_files(tmp_path, task, rows, config, message):
    pl.DataFrame(rows(_ids(task))).write_csv(tmp_path / "s.csv")
    valuator = FileValuator(_file(tmp_path, path="s.csv", **config))
    with pytest.raises(InputError) as error:
        valuator.score(task)
    assert str(tmp_path / "s.csv") in str(error.value) and message in str(error.value)


def test_non_finite_scores_name_the_candidate(tmp_path, task):
    values = [0.0] * len(task.candidates)
    values[3] = float("nan")
    pl.DataFrame({"candidate_id": _ids(task), "score": values}).write_csv(tmp_path / "s.csv")
    with pytest.raises(InputError, match=r"s.csv: 1 score\(s\) are NaN or infinite \(first: candidate 'candidate-00003'"):
        FileValuator(_file(tmp_path, path="s.csv")).score(task)


def test_numpy_needs_position_keys(tmp_path, task):
    np.save(tmp_path / "v.npy", np.zeros(len(task.candidates)))
    with pytest.raises(InputError, match="a .npy file has no ids; set key: position"):
        FileValuator(_file(tmp_path, path="v.npy")).score(task)
