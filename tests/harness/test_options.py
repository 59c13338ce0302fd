"""A Config's options as text (dvbench.harness.options) and ``dvbench plugins [NAME] [--markdown]``."""

from typing import Literal

from pydantic import Field

from dvbench.harness.config import Config, ExistingPath, SpecPath
from dvbench.harness.options import Option, markdown_table, options
from dvbench.harness.sizes import Size


class Every(Config):
    count: int = Field(8, ge=1, description="A count.")
    rate: float = Field(2e-5, gt=0, description="A rate.")
    share: float = Field(0.0, ge=0, lt=1, description="A share.")
    mass: float = Field(1.0, gt=0, le=1, description="A mass.")
    clip: float | None = Field(1.0, gt=0, description="Unset: none.")
    seed: int | None = Field(None, ge=0, description="Unset: the spec's.")
    mode: Literal["a", "b"] = Field("a", description="a | b.")
    on: bool = Field(True, description="On.")
    text: str = Field("", description="Text.")
    bins: list[str] = Field(["<=0.5", ">0.5"], min_length=1, description="Bins.")
    k: Size = Field(description="A size.")
    where: SpecPath = Field("out", description="A path.")
    scores: ExistingPath | None = Field(None, description="A file.")


def test_every_kind_of_option_reads_as_written_by_hand():
    assert options(Every) == [
        Option("count", "integer ≥ 1", "`8`", "A count."),
        Option("rate", "number > 0", "`2e-5`", "A rate."),
        Option("share", "number in [0, 1)", "`0.0`", "A share."),
        Option("mass", "number in (0, 1]", "`1.0`", "A mass."),
        Option("clip", "number > 0 or unset", "`1.0`", "Unset: none."),
        Option("seed", "integer ≥ 0", "unset", "Unset: the spec's."),
        Option("mode", "`a` | `b`", "`a`", "a | b."),
        Option("on", "boolean", "`true`", "On."),
        Option("text", "text", '`""`', "Text."),
        Option("bins", "non-empty list of texts", '`["<=0.5", ">0.5"]`', "Bins."),
        Option("k", "integer ≥ 1 or number in (0, 1]", "required", "A size."),
        Option("where", "path", "`out`", "A path."),
        Option("scores", "path (must exist)", "unset", "A file."),
    ]


def test_the_markdown_table_escapes_pipes_in_every_cell():
    class Two(Config):
        mode: Literal["a", "b"] = Field("a", description="`a` | `b`.")

    assert markdown_table(Two) == ("| key | type | default | meaning |\n|---|---|---|---|\n"
                                   "| `mode` | `a` \\| `b` | `a` | `a` \\| `b`. |")


def test_plugins_lists_every_plugin_with_its_options_defaults_and_help(dvbench):
    result = dvbench("plugins")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    for title in ("icp (valuator) 1.0.0, built-in", "random (valuator)", "random (selector)", "top_k (selector)"):
        assert title in out
    assert "max_batch_tokens" in out and "16384" in out and "Tokens per forward" in out


def test_plugins_name_shows_that_plugin_in_every_role(dvbench):
    icp = dvbench("plugins", "icp")
    assert icp.returncode == 0, icp.stderr
    assert "icp (valuator)" in icp.stdout and "top_k" not in icp.stdout
    both = dvbench("plugins", "random", "--markdown")
    assert both.stdout.startswith("### `random` (valuator)\n\n| key | type | default | meaning |\n")
    assert "\n### `random` (selector)\n" in both.stdout and both.stdout.count("| `seed` | integer ≥ 0 | unset |") == 2


def test_an_unknown_plugin_name_exits_2_with_the_known_names(dvbench):
    result = dvbench("plugins", "icpp")
    assert result.returncode == 2
    line = " ".join(result.stderr.split())
    assert "no plugin named 'icpp'; registered: bm25, ekfac, file, full_finetune, grad_ip, grad_store, icp," in line
    assert len(result.stderr.strip().splitlines()) == 1
