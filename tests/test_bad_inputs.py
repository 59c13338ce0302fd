"""The bad-input catalogue: each bad input, through the CLI, exits 2 with one line that names the
file, row or YAML path and field, and says what to do. Never a traceback."""

import json
import re

import numpy as np
import pytest
import yaml

from dvbench.harness.cli import main

ROWS = [{"id": f"r{i}", "instruction": f"Add {i} and {i}.", "output": f"{2 * i}"} for i in range(6)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _spec(folder, model_dir, **changes):
    spec = {"name": "bad", "model": {"name": str(model_dir)}, "template": {"name": "plain"},
            "data": {"candidates": {"path": "candidates.jsonl"}, "anchors": {"path": "anchors.jsonl"}},
            "valuators": {"random": {"use": "random"}}}
    for key, value in changes.items():
        target, *path = key.split("__")
        node = spec
        for part in [target, *path][:-1]:
            node = node.setdefault(part, {})
        node[[target, *path][-1]] = value
    _jsonl(folder / "candidates.jsonl", ROWS)
    _jsonl(folder / "anchors.jsonl", ROWS[:2])
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def _raw(text):
    def write(folder, model):
        _spec(folder, model)
        (folder / "spec.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
        return folder / "spec.yaml"
    return write


def _with(**changes):
    return lambda folder, model: _spec(folder, model, **changes)


def _data(rows_or_bytes, **changes):
    def write(folder, model):
        spec = _spec(folder, model, **changes)
        target = folder / "candidates.jsonl"
        if isinstance(rows_or_bytes, bytes):
            target.write_bytes(rows_or_bytes)
        else:
            _jsonl(target, rows_or_bytes)
        return spec
    return write


def _scores_file(name, content):
    def write(folder, model):
        spec = _spec(folder, model, valuators={"mine": {"use": "file", "path": name,
                                                        **({"key": "position"} if name.endswith(".npy") else {})}})
        if name.endswith(".npy"):
            np.save(folder / name, content)
        else:
            (folder / name).write_text(content)
        return spec
    return write


def _candidates_file(name, content):
    """The candidates in file ``name`` holding ``content`` (bytes, or a polars frame for parquet)."""
    def write(folder, model):
        spec = _spec(folder, model, data__candidates__path=name)
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            content.write_parquet(folder / name)
        return spec
    return write


def _then(write, prepare):
    """``write``'s spec, after ``prepare(folder, model)`` set up the files around it."""
    def both(folder, model):
        spec = write(folder, model)
        prepare(folder, model)
        return spec
    return both


def _link_out(name):
    """The output folder's ``name`` is a symbolic link to a folder outside it."""
    def prepare(folder, model):
        (folder / "elsewhere").mkdir()
        (folder / "out").mkdir()
        (folder / "out" / name).symlink_to(folder / "elsewhere")
    return prepare


def _broken_weights(folder, model):
    """A copy of the tiny model whose weights file is cut short."""
    import shutil

    shutil.copytree(model, folder / "broken")
    weights = folder / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _saved_splits(folder, model):
    """The candidates are a save_to_disk folder holding two splits, and the spec names none."""
    import datasets

    spec = _spec(folder, model, data__candidates__path="saved")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "dev": datasets.Dataset.from_list(ROWS[:2])}
                         ).save_to_disk(folder / "saved")
    return spec


ids = [r["id"] for r in ROWS]
CATALOGUE = {
    # spec file and YAML
    "spec file missing": (lambda f, m: f / "nope.yaml", "check", "no such spec file"),
    "spec not UTF-8": (_raw(b"name: \xff\xfe\n"), "check", "not UTF-8 text; save the spec as UTF-8"),
    "malformed YAML": (_raw("name: x\nvaluators: {a: [}\n"), "check", "not valid YAML: line 2"),
    "spec not a mapping": (_raw("- a\n- b\n"), "check", "expected a mapping of keys"),
    "repeated YAML key": (_raw("name: a\nname: b\n"), "check", "name (line 2): repeated (also on line 1)"),
    "nested YAML aliases (a billion laughs)": (_raw("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))), "check",
        "values through YAML aliases (at most 100,000); write the spec without nested aliases"),
    "wrong type": (_with(seed="many"), "check", "seed"),
    "unknown top-level key": (_with(colour="red"), "check", "colour"),
    "no valuators": (_with(valuators={}), "check", "declare at least one valuator"),
    "unknown plugin": (_with(valuators={"a": {"use": "icpp"}}), "check", "unknown valuator 'icpp'; available:"),
    "unknown plugin option": (_with(valuators={"a": {"use": "icp", "batchsize": 3}}), "check", "batchsize"),
    "plugin option out of range": (_with(valuators={"a": {"use": "icp", "batch_size": 0}}), "check", "batch_size"),
    "missing data file": (_with(data__candidates__path="nope.jsonl"), "check", "no such file"),
    "template leaves no room": (_with(template={"name": "plain", "max_length": 64, "max_answer_tokens": 64}),
                                "check", "must be below max_length"),
    "bad tracked regex": (_with(tracked="("), "check", "not a valid regular expression"),
    "unknown selection reference": (_with(selection={"s": {"use": "top_k", "k": 2, "reference": "nope"}}), "check",
                                    "unknown valuator label 'nope'"),
    "selection size zero": (_with(selection={"s": {"use": "top_k", "k": 0}}), "check", "a count must be at least 1"),
    "unreadable score bin": (_with(selection={"s": {"use": "score_bins", "bins": ["=>0.5"]}}), "check",
                             "cannot read bin '=>0.5'"),
    "training on an unknown selection": (_with(selection={"s": {"use": "top_k", "k": 2}},
                                               training={"t": {"use": "full_finetune", "selections": ["nope"]}}),
                                         "check", "unknown selection label 'nope'"),
    "evaluation without training": (_with(selection={"s": {"use": "top_k", "k": 2}}, evaluation={"e": {"use": "loss"}}),
                                    "check", "add a 'training' section"),
    "alpaca_eval judge without annotator": (_with(selection={"s": {"use": "top_k", "k": 2}},
                                                  training={"t": {"use": "full_finetune"}},
                                                  evaluation={"e": {"use": "win_rate", "judge": "alpaca_eval"}}),
                                            "check", "needs an annotator"),
    "unknown scatter valuator": (_with(leaderboard={"scatter": ["random", "nope"]}), "check",
                                 "unknown valuator label 'nope'"),
    # data rows
    "row without instruction": (_data([{"id": "x", "output": "1"}]), "run", "candidates.jsonl"),
    "row without output": (_data([{"id": "x", "instruction": "Say 1."}]), "run", "output"),
    "empty answer": (_data([{"id": "x", "instruction": "Say 1.", "output": ""}]), "run", "output"),
    "duplicate ids": (_data([ROWS[0], ROWS[0]]), "run", "'r0'"),
    "data not UTF-8": (_data(b'{"id": "x", "instruction": "\xff", "output": "1"}\n'), "run", "UTF-8"),
    "malformed JSON line": (_data(b'{"id": "x", "instruction": "a", "output": "1"}\n{oops\n'), "run", "line 2"),
    "answer with no room under max_length": (_with(template={"name": "plain", "header": "x" * 40, "max_length": 24,
                                                             "max_answer_tokens": 8}, valuators={"g": {"use": "grad_ip"}}), "run", "max_length"),
    "no anchors for icp": (_with(data__anchors=None, valuators={"a": {"use": "icp"}}), "run",
                           "icp needs at least one anchor"),
    "model path missing": (_with(model={"name": "/no/such/model"}, valuators={"g": {"use": "grad_ip"}}), "run",
                           "no such model folder"),
    "id true": (_data([{"id": True, "instruction": "Say 1.", "output": "1"}]), "run",
                "field 'id' must be text or an integer, found bool True"),
    "id a number with a fraction": (_data([{"id": 1.5, "instruction": "Say 1.", "output": "1"}]), "run",
                                    "found float 1.5"),
    "empty JSONL file": (_candidates_file("c.jsonl", b""), "run", "c.jsonl: holds no rows; give at least one example"),
    "empty JSON list": (_candidates_file("c.json", b"[]"), "run", "c.json: holds no rows"),
    "empty CSV file": (_candidates_file("c.csv", b""), "run", "c.csv: holds no rows"),
    "CSV with a header only": (_candidates_file("c.csv", b"instruction,output\n"), "run", "c.csv: holds no rows"),
    "parquet without rows": (_candidates_file("c.parquet", __import__("polars").DataFrame(
        {"instruction": [], "output": []}, schema={"instruction": str, "output": str})), "run", "c.parquet: holds no rows"),
    # what `check` reads as `run` would: every row, the model's name, a judge's credentials
    "malformed JSON line (check)": (_data(b'{"id": "x", "instruction": "a", "output": "1"}\n{oops\n'), "check",
                                    "candidates.jsonl: line 2: not valid JSON"),
    "row without output (check)": (_data([{"id": "x", "instruction": "Say 1."}]), "check",
                                   "candidates.jsonl: line 1: field 'output' is missing or empty"),
    "repeated row without ids (check)": (_data([{"instruction": "Say 1.", "output": "1"}] * 2), "check",
                                         "candidates.jsonl: line 2 repeats line 1 (the same instruction"),
    "dataset folder of several splits (check)": (_saved_splits, "check", "holds splits train, dev; choose one"),
    "misspelt embedded model (check)": (_with(model={"name": "embeded"}, valuators={"a": {"use": "icp"}}), "check",
                                        "hub model 'embeded' (did you mean 'embedded'?) is not in the local hub cache"),
    "model path missing (check)": (_with(model={"name": "/no/such/model"}, valuators={"g": {"use": "grad_ip"}}),
                                   "check", "no such model folder"),
    "local judge model missing (check)": (_with(selection={"s": {"use": "top_k", "k": 2}},
                                                training={"t": {"use": "full_finetune"}},
                                                evaluation={"e": {"use": "win_rate", "judge_model": "/no/judge"}}),
                                          "check", "evaluation.e: win_rate judge_model '/no/judge': no such model"),
    # paths and files
    "spec path is a folder": (lambda f, m: f, "check", "is a folder; give the spec's YAML file"),
    "data path is a plain folder": (_then(_with(data__candidates__path="rows"), lambda f, m: (f / "rows").mkdir()),
                                    "run", "rows"),
    "output folder is a file": (_then(_with(), lambda f, m: (f / "out").write_text("x")), "run",
                                "out is a file, not a folder; give another --out"),
    "work folder links outside the run": (_then(_with(valuators={"a": {"use": "icp"}}), _link_out("work")), "run",
                                          "would lie outside"),
    "scores folder links outside the run": (_then(_with(), _link_out("scores")), "run",
                                            "through the symbolic link"),
    "truncated weights": (_then(_with(model={"name": "broken"}, valuators={"g": {"use": "grad_ip"}}), _broken_weights),
                          "run", "cannot load the weights of model"),
    # scores files and selections
    "scores file missing ids": (_scores_file("s.csv", "candidate_id,score\nr0,1\n"), "run",
                                "no score for 5 of 6 candidates"),
    "scores file duplicate ids": (_scores_file("s.csv", "candidate_id,score\n" + "".join(f"{i},1\n" for i in ids)
                                               + "r0,2\n"), "run", "appears twice (rows 1 and 7)"),
    "scores file non-numeric": (_scores_file("s.csv", "candidate_id,score\n" + "".join(f"{i},high\n" for i in ids)),
                                "run", "is not numeric"),
    "scores with NaN": (_scores_file("s.npy", np.array([0.1, np.nan, 0.3, 0.2, 0.5, 0.6])), "run",
                        "1 score(s) are NaN or infinite (first: candidate 'r1', position 1)"),
    "scores array of the wrong shape": (_scores_file("s.npy", np.zeros(4)), "run", "holds an array of shape (4,)"),
    "selection larger than the pool": (_with(selection={"s": {"use": "top_k", "k": 1000}}), "run",
                                       "asks for 1000 candidates but the pool holds 6"),
}


@pytest.mark.parametrize("case", list(CATALOGUE), ids=list(CATALOGUE))
def test_bad_input_is_one_clear_line(case, tmp_path, tiny_model_dir, capsys, monkeypatch):
    write, command, expected = CATALOGUE[case]
    spec = write(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    args = [command, str(spec)] + (["--out", str(tmp_path / "out")] if command == "run" else [])
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip().splitlines()[-1]  # after any progress rows: the error, on one line
    assert line.startswith("error: ") and "Traceback" not in err, err
    assert expected in line, err


def test_check_names_the_api_key_an_alpaca_eval_judge_needs(tmp_path, tiny_model_dir, dvbench, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_CLIENT_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)
    judge = {"use": "win_rate", "judge": "alpaca_eval", "annotator": "weighted_alpaca_eval_gpt4_turbo"}
    spec = _spec(tmp_path, tiny_model_dir, selection={"s": {"use": "top_k", "k": 2}},
                 training={"t": {"use": "full_finetune"}}, evaluation={"judge": judge})
    result = dvbench("check", spec)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {spec}: evaluation.judge: annotator 'weighted_alpaca_eval_gpt4_turbo' "
                                     "calls openai_completions, which needs OPENAI_API_KEY (or OPENAI_API_KEYS, "
                                     "OPENAI_CLIENT_CONFIG_PATH) in the environment; set it, or judge with local_lm")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert dvbench("check", spec).returncode == 0
    judge["annotator"] = "no_such_annotator"
    result = dvbench("check", _spec(tmp_path, tiny_model_dir, selection={"s": {"use": "top_k", "k": 2}},
                                    training={"t": {"use": "full_finetune"}}, evaluation={"judge": judge}))
    assert result.returncode == 2 and "no alpaca_eval annotator config 'no_such_annotator'" in result.stderr


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import errno

    from dvbench.harness import work

    real = work.write_npz

    def full(path, arrays):
        real(path, arrays)  # the bytes reach the temporary file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(work, "write_npz", full)
    spec = _spec(tmp_path, tiny_model_dir, valuators={"a": {"use": "icp"}})
    code = main(["run", str(spec), "--out", str(tmp_path / "out")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: no space left on the device (")
    assert "run the same command again to resume" in line
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix in (".npz", ".tmp")]


def test_nothing_reads_untrusted_pickles_or_unsafe_yaml():
    """Security: YAML by safe_load only; NumPy files without pickles; no torch.load or pickle at all
    (weights are safetensors); no remote code unless a spec asks."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    sources = {p: p.read_text() for folder in ("harness", "plugins") for p in (root / folder).rglob("*.py")}
    for path, text in sources.items():
        assert "yaml.load(" not in text and "yaml.unsafe_load" not in text, path
        assert "import pickle" not in text and "torch.load(" not in text, path
        assert "trust_remote_code=True" not in text, path
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (path, call)


def test_artifacts_stay_under_the_output_folder(tmp_path):
    from dvbench.harness.artifacts import ArtifactStore

    store = ArtifactStore(tmp_path / "out")
    assert store.path("scores/icp", ".parquet") == (tmp_path / "out/scores/icp.parquet").resolve()
    with pytest.raises(ValueError, match="would lie outside"):
        store.path("../../elsewhere", ".json")
