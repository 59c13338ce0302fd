import subprocess
import sys

import pytest

from dvbench.harness.config import ConfigError
from dvbench.harness.spec import load_spec

GOOD = """\
name: demo
seed: 3
data:
  generated: {candidates: 50, anchors: 4, eval: 4}
valuators:
  rand: {use: random, seed: 1}
selection:
  top: {use: top_k, k: 0.2, reference: rand}
"""


def _spec(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _error(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as error:
        load_spec(_spec(tmp_path, text))
    return str(error.value)


def test_good_spec_fills_defaults(tmp_path):
    spec = load_spec(_spec(tmp_path, GOOD))
    assert spec.name == "demo" and spec.settings.seed == 3
    assert spec.valuators["rand"].plugin.config.seed == 1
    assert spec.selection["top"].reference == "rand"
    resolved = spec.resolved()
    assert resolved["model"]["name"] == "embedded"
    assert resolved["valuators"]["rand"] == {"use": "random", "seed": 1}


def test_typo_in_a_key_names_the_path_line_and_allowed_keys(tmp_path):
    message = _error(tmp_path, GOOD.replace("seed: 3", "sede: 3"))
    assert "spec.yaml: sede (line 2): unknown key 'sede'; allowed: name, description, seed" in message
    assert "\n" not in message  # one problem, one line


def test_wrong_type_in_plugin_config(tmp_path):
    message = _error(tmp_path, GOOD.replace("seed: 1}", "seed: one}"))
    assert "valuators.rand.seed (line 6)" in message
    assert "got 'one' (str)" in message and "integer" in message


def test_unknown_plugin_lists_the_available(tmp_path):
    message = _error(tmp_path, GOOD.replace("use: random", "use: randm"))
    assert "valuators.rand.use (line 6): unknown valuator 'randm'; available: bm25, ekfac, file, grad_ip, grad_store, icp, one_step, random, repsim" in message


def test_out_of_range_values(tmp_path):
    message = _error(tmp_path, GOOD.replace("k: 0.2", "k: 1.5").replace("seed: 3", "seed: -1"))
    assert "2 problems" in message
    assert "seed (line 2): expected greater than or equal to 0; got -1 (int)" in message
    assert "selection.top.k (line 8): a fraction must lie in (0, 1]" in message


def test_unknown_key_inside_a_plugin_config(tmp_path):
    message = _error(tmp_path, GOOD.replace("k: 0.2", "kk: 0.2"))
    assert "selection.top.kk (line 8): unknown key 'kk'; allowed: k" in message
    assert "selection.top.k (line 8): missing; this key is required" in message


def test_missing_file_and_unknown_reference(tmp_path):
    text = GOOD.replace("generated: {candidates: 50, anchors: 4, eval: 4}", "candidates: {path: nope.jsonl}")
    message = _error(tmp_path, text.replace("reference: rand", "reference: icp"))
    assert f"data.candidates.path (line 4): no such file: {tmp_path / 'nope.jsonl'}" in message
    assert "selection.top.reference (line 8): unknown valuator label 'icp'; labels: rand" in message


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed\n", "not valid YAML: line 2, column 1"),
    ("- a\n- b\n", "expected a mapping of keys (name, description, seed"),
    ("name: x\ndata: {generated: {}}\nvaluators: {}\n", "valuators (line 3): declare at least one valuator"),
    ("name: bad/name\ndata: {generated: {}}\nvaluators: {r: {use: random}}\n", "name (line 1): a name is letters"),
    ("name: x\ndata: {}\nvaluators: {r: {use: random}}\n", "data (line 2): give 'generated' or a 'candidates' file"),
    ("name: x\ndata: {generated: {}}\nvaluators: {r: random}\n", "valuators.r (line 3): expected a mapping with 'use:"),
    ("name: x\ndata: {generated: {}}\nvaluators: {../x: {use: random}}\n", "valuators.../x (line 3): a label is"),
    ("name: x\ndata: {generated: {anchors: 2, facts: 3}}\nvaluators: {r: {use: random}}\n",
     "facts (3) must be at most anchors (2) and candidates (300)"),
])
def test_malformed_specs(tmp_path, text, expected):
    assert expected in _error(tmp_path, text)


def test_repeated_keys_are_refused(tmp_path):
    message = _error(tmp_path, GOOD + "  top: {use: random, k: 3}\n")
    assert "selection.top (line 9): repeated (also on line 8)" in message


def test_reference_to_a_misconfigured_valuator_reports_only_its_config(tmp_path):
    message = _error(tmp_path, GOOD.replace("seed: 1}", "seed: one}"))
    assert "\n" not in message and "selection.top.reference" not in message


@pytest.mark.parametrize("old, new, path", [
    ("seed: 3", "sede: 3", "sede (line 2): unknown key"),
    ("seed: 1}", "seed: one}", "valuators.rand.seed (line 6): expected a valid integer"),
    ("use: random", "use: randm", "valuators.rand.use (line 6): unknown valuator 'randm'"),
])
def test_check_command_exits_nonzero_with_the_path(tmp_path, old, new, path):
    spec = _spec(tmp_path, GOOD.replace(old, new))
    result = subprocess.run([sys.executable, "-m", "dvbench.harness.cli", "check", str(spec)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert path in " ".join(result.stderr.split())


def test_check_command_accepts_a_good_spec(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "dvbench.harness.cli", "check", str(_spec(tmp_path, GOOD))],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_a_model_beside_the_spec_is_read_from_the_specs_folder(tmp_path):
    (tmp_path / "my-model").mkdir()
    spec = _spec(tmp_path, "name: m\nmodel: {name: my-model}\ndata: {generated: {}}\nvaluators: {r: {use: random}}\n")
    assert load_spec(spec).settings.model.name == str(tmp_path / "my-model")
    spec = _spec(tmp_path, "name: m\nmodel: {name: org/hub-model}\ndata: {generated: {}}\nvaluators: {r: {use: random}}\n")
    assert load_spec(spec).settings.model.name == "org/hub-model"


def test_template_settings_are_checked_and_reach_the_template(tmp_path):
    base = "name: t\ndata: {generated: {}}\nvaluators: {r: {use: random}}\n"
    message = _error(tmp_path, base + "template: {name: vicuna}\n")
    assert "template.name (line 4): expected 'alpaca', 'plain' or 'chat'; got 'vicuna'" in message
    message = _error(tmp_path, base + "template: {max_length: 64, max_answer_tokens: 64}\n")
    assert "template (line 4): max_answer_tokens (64) must be below max_length (64)" in message
    spec = load_spec(_spec(tmp_path, base + "template: {name: plain, header: 'Q: ', eos: false}\n"))
    template = spec.settings.template.template()
    assert (template.name, template.header, template.eos, template.max_length) == ("plain", "Q: ", False, 1024)


def _registry_with_a_selector_named_like_entry_keys():
    """The built-ins plus a selector whose options are named ``reference`` and ``options``."""
    import types

    from pydantic import Field

    from dvbench.harness.config import Config as Base
    from dvbench.harness.hookspecs import hookimpl
    from dvbench.harness.plugins import get_plugin_manager, load_registry
    from dvbench.harness.roles import Selector

    class Clashing(Selector):
        name = "clashing"

        class Config(Base):
            reference: str = Field("none", description="An option that shares an entry key's name.")
            options: int = Field(0, description="Another.")

        def select(self, scores, *, reference, seed):
            return self.selection({"all": scores.candidate_ids})

    @hookimpl
    def dvbench_register_selectors(register):
        register(Clashing)

    pm = get_plugin_manager(autoload=False)
    module = types.ModuleType("clashing")
    module.dvbench_register_selectors = dvbench_register_selectors
    pm.register(module, name="clashing")
    return load_registry(pm)


def test_an_option_named_like_an_entry_key_is_given_under_options(tmp_path):
    registry = _registry_with_a_selector_named_like_entry_keys()
    text = GOOD.replace("top: {use: top_k, k: 0.2, reference: rand}",
                        "top: {use: clashing, reference: rand, options: {reference: mine, options: 3}}")
    spec = load_spec(_spec(tmp_path, text), registry=registry)
    use = spec.selection["top"]
    assert use.reference == "rand" and use.plugin.config.reference == "mine" and use.plugin.config.options == 3
    assert spec.resolved()["selection"]["top"] == {"use": "clashing", "reference": "rand",
                                                    "options": {"reference": "mine", "options": 3}}


def test_entry_keys_are_typed_and_an_option_is_given_once(tmp_path):
    message = _error(tmp_path, GOOD.replace("reference: rand}", "reference: 3}"))
    assert "selection.top.reference (line 8)" in message and "got 3 (int)" in message
    message = _error(tmp_path, GOOD.replace("k: 0.2, reference: rand}", "k: 0.2, options: {k: 0.3}}"))
    assert "selection.top.options.k (line 8): given both here and beside 'use'; keep one" in message
    message = _error(tmp_path, GOOD.replace("k: 0.2, reference: rand}", "options: [k]}"))
    assert "selection.top.options (line 8)" in message and "dictionary" in message


def test_an_alias_is_walked_once_and_its_problems_keep_a_line(tmp_path):
    text = GOOD.replace("valuators:\n  rand: {use: random, seed: 1}",
                        "base: &entry {use: random, sed: 1}\nvaluators:\n  rand: *entry\n  again: *entry")
    message = _error(tmp_path, text)
    assert "valuators.rand.sed (line 7): unknown key 'sed'" in message
    assert "valuators.again.sed (line 8): unknown key 'sed'" in message


@pytest.mark.parametrize("generated, facts", [("{}", 4), ("{anchors: 3}", 0), ("{anchors: 100}", 8),
                                               ("{anchors: 16, facts: 0}", 0), ("{anchors: 16, facts: 10}", 10)])
def test_planted_facts_default_to_a_quarter_of_the_anchors(tmp_path, generated, facts):
    spec = load_spec(_spec(tmp_path, f"name: x\ndata: {{generated: {generated}}}\nvaluators: {{r: {{use: random}}}}\n"))
    assert spec.settings.data.generated.facts == facts


def test_overrides_validate_like_the_same_edit_of_the_file(tmp_path):
    import yaml

    overrides = ["seed=7", "valuators.rand.seed=5", "data.generated.candidates=20", "selection.bot.use=top_k",
                 "selection.bot.k=3", "leaderboard.overlap_fractions=[0.1, 0.2]"]
    spec = load_spec(_spec(tmp_path, GOOD), overrides=overrides, limit=9)
    edited = yaml.safe_load(GOOD)
    edited.update(seed=7, leaderboard={"overlap_fractions": [0.1, 0.2]})
    edited["valuators"]["rand"]["seed"] = 5
    edited["data"]["generated"]["candidates"] = 20
    edited["selection"]["bot"] = {"use": "top_k", "k": 3}
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(edited))
    assert spec.resolved() == load_spec(tmp_path / "edited.yaml").resolved()
    assert spec.overrides == tuple(overrides) and spec.limit == 9
    assert load_spec(tmp_path / "spec.yaml").resolved()["seed"] == 3  # the file itself is untouched


@pytest.mark.parametrize("override, expected", [
    ("valuators.rand.sede=4", "spec.yaml: --set valuators.rand.sede=4: unknown key 'sede'; allowed: seed"),
    ("valuators.rand={use: random, sed: 1}",
     "valuators.rand.sed (--set valuators.rand={use: random, sed: 1}): unknown key 'sed'"),
    ("data.generated.anchors=2", "data.generated (--set data.generated.anchors=2): facts (4) must be at most"),
    ("seed=-1", "--set seed=-1: expected greater than or equal to 0"),
    ("seed.x=3", "spec.yaml: --set seed.x=3: seed is int 3, not a mapping; set seed itself"),
    ("valuators.rand.seed", "--set valuators.rand.seed: expected a dotted path, '=' and a value"),
    ("valuators..seed=1", "--set valuators..seed=1: expected a dotted path"),
    ("seed=[1", "--set seed=[1: the value is not valid YAML"),
])
def test_a_bad_override_is_named_in_the_error(tmp_path, override, expected):
    from dvbench.harness.errors import InputError

    with pytest.raises(InputError) as error:
        load_spec(_spec(tmp_path, GOOD.replace("anchors: 4,", "anchors: 16, facts: 4,")), overrides=[override])
    assert expected in str(error.value) and "(line" not in str(error.value)


def test_an_override_reaches_a_label_with_dots_and_a_later_one_wins(tmp_path):
    text = GOOD.replace("rand: {use: random, seed: 1}", "rand.v2: {use: random, seed: 1}").replace("reference: rand}",
                                                                                                 "reference: rand.v2}")
    spec = load_spec(_spec(tmp_path, text), overrides=["valuators.rand.v2.seed=4", "seed=1", "seed=2"])
    assert spec.valuators["rand.v2"].plugin.config.seed == 4 and spec.settings.seed == 2


def test_limit_is_at_least_one(tmp_path):
    from dvbench.harness.errors import InputError

    with pytest.raises(InputError, match=r"--limit 0: give the number of candidates to keep, at least 1"):
        load_spec(_spec(tmp_path, GOOD), limit=0)
