"""Hugging Face datasets as examples: saved folders, local dataset repos, hub names from the
local cache, all with the network blocked."""

import shutil
import socket
import sys
from types import SimpleNamespace

import datasets  # the `test` extra installs it
import pytest

from dvbench.harness.config import ConfigError
from dvbench.harness.errors import InputError
from dvbench.harness.data.files import load_examples
from dvbench.harness.data.rows import content_id
from dvbench.harness.data.hf import load_hub_examples
from dvbench.harness.spec import load_spec

ROWS = [{"id": "a", "instruction": "Add.", "input": "1 2", "output": "3", "subset": "math", "extra": 1},
        {"instruction": "Say hi.", "input": None, "output": "hi", "subset": None, "extra": 2}]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """An empty datasets cache under tmp_path, downloads not allowed by the environment, hub
    access flags as in a fresh session, and every socket refused; the list records attempts."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("DVBENCH_ALLOW_DOWNLOAD", raising=False)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _check(examples):
    first, second = examples
    assert (first.id, first.input, first.subset, dict(first.meta)) == ("a", "1 2", "math", {"extra": 1})
    assert (second.id, second.input, second.subset) == (content_id("Say hi.", "", "hi"), "", None)


def test_saved_dataset_folder(tmp_path, offline):
    datasets.Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    _check(load_examples(tmp_path / "saved"))
    with pytest.raises(InputError, match=r"saved: holds a single dataset \(no named split\), not split 'test'"):
        load_examples(tmp_path / "saved", split="test")
    assert offline == []


def test_saved_dataset_dict_needs_a_split_when_it_holds_several(tmp_path):
    one = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": one}).save_to_disk(tmp_path / "single")
    _check(load_examples(tmp_path / "single"))
    datasets.DatasetDict({"train": one, "test": one.select([0])}).save_to_disk(tmp_path / "both")
    with pytest.raises(InputError, match=r"both: holds splits train, test; choose one with 'split'"):
        load_examples(tmp_path / "both")
    _check(load_examples(tmp_path / "both", split="train"))
    assert [e.id for e in load_examples(tmp_path / "both", split="test")] == ["a"]
    with pytest.raises(InputError, match=r"both: no split 'dev'; splits: train, test"):
        load_examples(tmp_path / "both", split="dev")


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_folder_of_data_files(tmp_path, kind):
    folder = tmp_path / "repo" / "data"
    folder.mkdir(parents=True)
    one = datasets.Dataset.from_list(ROWS)
    if kind == "parquet":
        one.to_parquet(folder / "train.parquet")
    else:
        one.to_json(folder / "train.jsonl")
    _check(load_examples(tmp_path / "repo"))
    _check(load_examples(tmp_path / "repo", split="train"))


def test_bad_rows_name_the_source_row_and_field(tmp_path):
    rows = [ROWS[0], {"instruction": "No answer.", "output": None}]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    with pytest.raises(InputError) as error:
        load_examples(tmp_path / "saved")
    assert str(error.value).startswith(f"{tmp_path / 'saved'}: row 2: field 'output' is missing or empty")
    assert len(load_examples(tmp_path / "saved", require_output=False)) == 2
    datasets.DatasetDict({"dev": datasets.Dataset.from_list([ROWS[0], ROWS[0]])}).save_to_disk(tmp_path / "dup")
    with pytest.raises(InputError, match=r"dup \(split dev\): row 2 repeats id 'a' of row 1"):
        load_examples(tmp_path / "dup")


def test_unreadable_folder_and_split_on_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: cannot be read as a Hugging Face dataset by load_dataset"):
        load_examples(tmp_path / "empty")
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    with pytest.raises(InputError, match=r"d.jsonl: 'split' applies to dataset folders"):
        load_examples(tmp_path / "d.jsonl", split="train")


def test_hub_dataset_without_downloads_never_touches_the_network(offline):
    with pytest.raises(InputError) as error:
        load_hub_examples("someone/nothing")
    message = str(error.value)
    assert message.startswith("hub dataset someone/nothing (split train): not in the local datasets cache")
    assert "set 'allow_download: true' beside 'dataset: someone/nothing'" in message
    assert "DVBENCH_ALLOW_DOWNLOAD=1" in message
    assert offline == []
    assert datasets.config.HF_HUB_OFFLINE is False  # restored after the call


def _cache_hub_dataset(tmp_path, name="someone/alpaca"):
    """Lay out ``name`` in the datasets cache as a hub download would leave it."""
    from datasets.packaged_modules.json.json import Json

    datasets.Dataset.from_list(ROWS).to_json(tmp_path / "rows.jsonl")
    owner, short = name.split("/")
    builder = Json(cache_dir=str(tmp_path / "build"), dataset_name=short,
                   data_files={"train": str(tmp_path / "rows.jsonl")})
    builder.download_and_prepare()
    shutil.copytree(builder.cache_dir, datasets.config.HF_DATASETS_CACHE / f"{owner}___{short}/default/0.0.0/abc")


def test_hub_dataset_from_the_cache_offline(tmp_path, offline):
    _cache_hub_dataset(tmp_path)
    _check(load_hub_examples("someone/alpaca"))
    with pytest.raises(InputError) as error:
        load_hub_examples("someone/alpaca", split="test")
    assert "hub dataset someone/alpaca (split test): cannot be loaded (Unknown split" in str(error.value)
    assert "downloads are off" in str(error.value)
    assert offline == []


def test_downloads_allowed_reach_for_the_hub(offline, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http, "time", SimpleNamespace(sleep=lambda seconds: None))  # no retry back-off
    monkeypatch.setenv("DVBENCH_ALLOW_DOWNLOAD", "yes")
    with pytest.raises(InputError, match=r"not found on the hub or the hub is unreachable"):
        load_hub_examples("someone/nothing")
    assert offline, "allowed downloads should have tried the network"


def test_missing_datasets_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "folder").mkdir()
    needs = r'folder: reading Hugging Face datasets needs the datasets package; pip install "dvbench\[datasets\]"'
    with pytest.raises(InputError, match=needs):
        load_examples(tmp_path / "folder")


SPEC = "name: x\ndata:\n  candidates: {SOURCE}\nvaluators: {r: {use: random}}\n"


def _spec(tmp_path, source):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("{SOURCE}", source))
    return path


EITHER = "data.candidates (line 3): give 'path' (a file or folder) or 'dataset' (a hub name)"


@pytest.mark.parametrize("source, expected", [
    ("{path: d.jsonl, dataset: someone/alpaca}", f"{EITHER}, not both"),
    ("{split: train}", f"{EITHER}, found neither"),
    ("{path: d.jsonl, revision: main, allow_download: true}",
     "data.candidates (line 3): 'revision', 'allow_download': only for a hub 'dataset', not with 'path'"),
    ("{path: d.jsonl, split: train}",
     "data.candidates (line 3): 'split' applies to a dataset folder or a hub 'dataset', not to a file"),
    ("{dataset: ''}", "data.candidates.dataset (line 3): String should have at least 1 character"),
])
def test_spec_source_errors(tmp_path, source, expected):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    with pytest.raises(ConfigError) as error:
        load_spec(_spec(tmp_path, source))
    assert expected in str(error.value)


def test_spec_sources_load(tmp_path):
    from dvbench.harness.stages.data import load_data

    _cache_hub_dataset(tmp_path)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
                         ).save_to_disk(tmp_path / "saved")
    text = SPEC.replace("{SOURCE}", "{dataset: someone/alpaca}\n  anchors: {path: saved, split: test}")
    (tmp_path / "spec.yaml").write_text(text)
    data = load_data(load_spec(tmp_path / "spec.yaml"))
    _check(data.candidates)
    assert [e.id for e in data.anchors] == ["a"] and data.eval == ()


def test_check_reads_hub_datasets_from_the_cache_and_downloads_nothing(tmp_path, offline):
    """load_data(download=False), as `dvbench check` calls it: a cached dataset is read (every row
    validated); one not cached is skipped with a note when a run could download it, and an error
    when it could not."""
    from dvbench.harness.stages.data import load_data

    _cache_hub_dataset(tmp_path)
    allowed = "{dataset: someone/alpaca}\n  anchors: {dataset: someone/nothing, allow_download: true}"
    lines = []
    data = load_data(load_spec(_spec(tmp_path, allowed)), lines.append, download=False)
    _check(data.candidates)
    assert data.anchors == ()
    assert lines == ["hub dataset someone/nothing: not in the local datasets cache, so not read; a run downloads it"]
    with pytest.raises(InputError, match=r"hub dataset someone/nothing \(split train\): not in the local datasets"):
        load_data(load_spec(_spec(tmp_path, allowed.replace(", allow_download: true", ""))), download=False)
    assert offline == []
