import json
from pathlib import Path

import pytest

from dvbench.harness.errors import InputError
from dvbench.harness.data.files import load_examples
from dvbench.harness.data.rows import SHOWN, content_id, examples_from_rows
from dvbench.harness.stages.data import Data, limited
from dvbench.harness.data.generated import FACT_PAIRS, FACTS, FAMILIES, generate

SHARED = Path(__file__).parents[2].parent / "shared" / "data"


def _jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_rows_become_examples_with_stable_ids(tmp_path):
    path = _jsonl(tmp_path, [
        {"id": 7, "instruction": "Add.", "input": "1 2", "output": "3", "dataset": "math", "extra": 1},
        {"instruction": "Say hi.", "output": "hi"},
    ])
    given, derived = load_examples(path)
    assert (given.id, given.subset, dict(given.meta)) == ("7", "math", {"extra": 1})
    assert derived.id == content_id("Say hi.", "", "hi") and derived.input == "" and derived.subset is None
    (tmp_path / "d.json").write_text(json.dumps([{"instruction": "Say hi.", "output": "hi"}]))
    assert load_examples(tmp_path / "d.json")[0].id == derived.id


@pytest.mark.parametrize("rows, message", [
    (['{"instruction": "a", "output": "b"}', "{broken"], "line 2: not valid JSON"),
    ([{"instruction": "a"}], "line 1: field 'output' is missing or empty"),
    ([{"instruction": "a", "output": "  "}], "line 1: field 'output' is missing or empty"),
    ([{"output": "b"}], "line 1: field 'instruction' is missing or empty"),
    ([{"instruction": "a", "output": 3}], "line 1: field 'output' must be text, found int"),
    ([["a", "b"]], "line 1: expected an object, found list"),
    ([{"id": "x", "instruction": "a", "output": "b"}, "", {"id": "x", "instruction": "c", "output": "d"}],
     "line 3 repeats id 'x' of line 1"),
])
def test_bad_rows_name_the_file_line_and_field(tmp_path, rows, message):
    path = _jsonl(tmp_path, rows)
    with pytest.raises(InputError) as error:
        load_examples(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_every_bad_row_is_named_up_to_a_cap(tmp_path):
    good = {"instruction": "a", "output": "b"}
    rows = [good, "{broken", {"instruction": "c"}] + [{"output": f"{i}"} for i in range(SHOWN)]
    with pytest.raises(InputError) as error:
        load_examples(_jsonl(tmp_path, rows))
    head, *named = str(error.value).splitlines()
    assert head == f"{tmp_path / 'd.jsonl'}: {len(rows) - 1} bad rows; fix each"
    assert named[0].startswith("  line 2: not valid JSON") and named[1].startswith("  line 3: field 'output'")
    assert [line.split(":")[0].strip() for line in named[:SHOWN]] == [f"line {n}" for n in range(2, SHOWN + 2)]
    assert named[SHOWN:] == [f"  ... and {len(rows) - 1 - SHOWN} more"]


def test_a_repeated_row_without_ids_is_named_by_both_lines_not_a_hash(tmp_path):
    row = {"instruction": "a", "output": "b"}
    with pytest.raises(InputError) as error:
        load_examples(_jsonl(tmp_path, [row, {"instruction": "c", "output": "d"}, row]))
    message = str(error.value)
    assert message.endswith("line 3 repeats line 1 (the same instruction, input and output, and no id); "
                            "remove one, or give each an 'id'")
    assert content_id("a", "", "b") not in message


def test_limit_keeps_a_seeded_ordered_nested_subset_and_the_facts_within_it():
    data = Data(**generate(40, 8, 0, seed=5, facts=4))
    notes = []
    small, large = limited(data, 10, 3, notes.append), limited(data, 20, 3, notes.append)
    order = {c.id: i for i, c in enumerate(data.candidates)}
    positions = [order[c.id] for c in small.candidates]
    assert len(small.candidates) == 10 and positions == sorted(positions)
    assert set(small.candidates) < set(large.candidates)  # a smaller limit keeps a subset of a larger one's
    assert small.candidates == limited(data, 10, 3).candidates != limited(data, 10, 4).candidates
    assert small.anchors == data.anchors and small.eval == data.eval  # the same ids and texts
    kept = {c.id for c in small.candidates}
    for before, after in zip(data.anchors, small.anchors):
        if "supported_by" in before.meta:
            assert after.meta["supported_by"] == [c for c in before.meta["supported_by"] if c in kept]
    assert limited(data, 40, 3, notes.append) is data and limited(data, None, 3) is data
    assert notes == ["--limit 10: 10 of 40 candidates, drawn by seed 3", "--limit 20: 20 of 40 candidates, drawn by seed 3",
                     "--limit 40: the pool holds 40 candidates; all are kept"]


def test_bad_files(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b'{"instruction": "\xff"}\n')
    (tmp_path / "x.json").write_text('{"not": "a list"}')
    for name, message in [("missing.jsonl", "no such file"), ("x.jsonl", "not UTF-8 text (byte 17)"),
                          ("x.json", "expected a JSON list of objects, found dict")]:
        with pytest.raises(InputError) as error:
            load_examples(tmp_path / name)
        assert str(error.value).startswith(str(tmp_path / name)) and message in str(error.value)
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(InputError, match=r"unknown data format '.txt'; use .json, .jsonl, .csv or .parquet"):
        load_examples(tmp_path / "x.txt")


def test_csv_and_parquet_rows(tmp_path):
    import polars as pl

    frame = pl.DataFrame({"id": ["007", None], "instruction": ["Add.", "Say hi."], "input": ["1 2", None],
                          "output": ["3", "hi"], "subset": ["math", None]})
    frame.write_csv(tmp_path / "d.csv")
    frame.write_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        first, second = load_examples(tmp_path / name)
        assert (first.id, first.input, first.subset) == ("007", "1 2", "math")
        assert (second.id, second.input, second.subset) == (content_id("Say hi.", "", "hi"), "", None)
    frame.with_columns(output=pl.Series(["3", None])).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet: row 2: field 'output' is missing or empty"):
        load_examples(tmp_path / "bad.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"broken.parquet: cannot be read as parquet"):
        load_examples(tmp_path / "broken.parquet")


def test_eval_prompts_may_lack_outputs(tmp_path):
    path = _jsonl(tmp_path, [{"instruction": "Write a poem.", "baseline_output": "roses"}])
    (example,) = load_examples(path, require_output=False)
    assert example.output == "" and example.meta["baseline_output"] == "roses"


@pytest.mark.skipif(not SHARED.exists(), reason="the shared real data is not beside this checkout")
def test_real_alpaca_files_load():
    anchors = load_examples(SHARED / "alpaca_gpt4/kmeans100_anchors.jsonl")
    assert len(anchors) == 100 and all(a.instruction and a.output for a in anchors)
    koala = load_examples(SHARED / "alpaca_eval/koala.jsonl", require_output=False)
    assert len(koala) == 156 and {e.subset for e in koala} == {"koala"}


def test_generated_data_is_deterministic_disjoint_and_marks_defects():
    one, two = generate(300, 20, 40, defect_fraction=0.2, seed=1), generate(300, 20, 40, defect_fraction=0.2, seed=1)
    assert one == two and [e.meta for e in one["candidates"]] == [e.meta for e in two["candidates"]]
    assert generate(300, 20, 40, seed=2)["candidates"] != one["candidates"]
    questions = {split: {(e.instruction, e.input) for e in examples} for split, examples in one.items()}
    assert not (questions["candidates"] & questions["anchors"]) and not (questions["candidates"] & questions["eval"])
    assert not (questions["anchors"] & questions["eval"])
    defects = [e.meta["defect"] for e in one["candidates"] if e.meta["defect"]]
    assert 50 <= len(defects) <= 60 and set(defects) == {"wrong_answer", "other_answer", "truncated"}
    assert {e.subset for e in one["candidates"]} == set(FAMILIES)


def test_generated_answers_are_right():
    clean = [e for e in generate(120, 0, 0, defect_fraction=0.0, seed=3)["candidates"]]
    for e in clean:
        if e.subset == "arithmetic":
            left, result = e.output.rstrip(".").split(" = ")
            assert eval(left) == int(result)  # noqa: S307 - our own generated arithmetic
        elif e.subset == "sorting":
            numbers = [int(n) for n in e.input.split(", ")]
            assert [int(n) for n in e.output.split(", ")] == sorted(numbers, reverse="descending" in e.instruction)
        elif e.subset == "facts":
            assert (e.instruction, e.output) in FACTS


def test_generator_says_when_a_family_runs_out():
    with pytest.raises(InputError, match="family 'facts' ran out of distinct questions after 80"):
        generate(81, 0, 0, families=("facts",))


def test_one_validation_path_for_rows_from_any_source():
    rows = [("row 1", {"instruction": "Say hi.", "output": "hi"}), ("row 2", {"instruction": "Add.", "output": ""})]
    assert examples_from_rows("hub dataset x (split train)", rows[:1])[0].id == content_id("Say hi.", "", "hi")
    with pytest.raises(InputError, match=r"^hub dataset x \(split train\): row 2: field 'output' is missing or empty"):
        examples_from_rows("hub dataset x (split train)", rows)
    assert len(examples_from_rows("source", rows, require_output=False)) == 2


def _fact(question: str, answer: str) -> int:
    """The index of the fact pair a (question, answer) row states, either way round."""
    (index,) = [i for i, pair in enumerate(FACT_PAIRS) if (question, answer) in pair]
    return index


def test_planted_facts_are_supported_by_exactly_the_candidates_that_state_them():
    data = generate(300, 16, 32, defect_fraction=0.3, seed=4, facts=6)
    assert len(data["anchors"]) == 16 and len(data["candidates"]) == 300  # the counts stay the totals
    planted = [a for a in data["anchors"] if "supported_by" in a.meta]
    assert len(planted) == 6 and all(a.subset == "facts" and a.input == "" for a in planted)
    by_id = {c.id: c for c in data["candidates"]}
    states = {}  # fact pair -> every row, in any split, stating it (borrowed defect answers included)
    for split, rows in data.items():
        for e in rows:
            for pair_index, pair in enumerate(FACT_PAIRS):
                if e.output in (pair[0][1], pair[1][1]) or e.instruction in (pair[0][0], pair[1][0]):
                    states.setdefault(pair_index, []).append((split, e.id))
    for anchor in planted:
        (supporter,) = [by_id[i] for i in anchor.meta["supported_by"]]
        assert supporter.meta == {"defect": None, "supports": [anchor.id]}
        pair = _fact(anchor.instruction, anchor.output)
        assert _fact(supporter.instruction, supporter.output) == pair and supporter.instruction != anchor.instruction
        assert sorted(states[pair]) == sorted([("anchors", anchor.id), ("candidates", supporter.id)])
    supporters = [c for c in data["candidates"] if "supports" in c.meta]
    assert len(supporters) == 6 and len({c.id for c in supporters}) == 6
    defects = [c for c in data["candidates"] if c.meta["defect"]]
    assert 80 <= len(defects) <= 90 and not {c.id for c in defects} & {c.id for c in supporters}
    assert generate(300, 16, 32, defect_fraction=0.3, seed=4, facts=6) == data
    assert [e.meta for e in generate(300, 16, 32, defect_fraction=0.3, seed=4, facts=6)["anchors"]] == \
        [e.meta for e in data["anchors"]]
    assert generate(300, 16, 32, defect_fraction=0.3, seed=5, facts=6)["anchors"] != data["anchors"]


def test_no_planted_facts_gives_the_data_of_before():
    plain = generate(300, 20, 40, defect_fraction=0.2, seed=1)
    assert generate(300, 20, 40, defect_fraction=0.2, seed=1, facts=0) == plain
    assert not any("supported_by" in a.meta for a in plain["anchors"])
    assert not any("supports" in c.meta for c in plain["candidates"])


def test_planted_facts_need_room():
    with pytest.raises(InputError, match="facts is 5; it may be at most the anchors \\(4\\)"):
        generate(10, 4, 0, facts=5)
    with pytest.raises(InputError, match="ran out of distinct questions"):  # 40 planted leave the family none
        generate(50, 40, 0, families=("facts",), facts=40)
