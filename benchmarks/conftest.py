"""Benchmarks run apart from the tests: `python -m pytest benchmarks`. Each compares dvbench's
implementation with a reference implementation measured in the same run; the ratio is the result.

Peak memory: a benchmark calls the ``peak_rss_mib`` fixture and records it with ``record_property``;
the terminal summary lists every recorded property.
"""

import re
from pathlib import Path

import pytest


def _status(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


@pytest.fixture
def peak_rss_mib():
    """``measure(fn)``: the peak resident memory added while ``fn()`` runs, in MiB (Linux: resets
    the process's high-water mark first)."""
    def measure(fn) -> float:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status("VmRSS")
        fn()
        return round((_status("VmHWM") - before) / 1024, 1)
    return measure


def pytest_terminal_summary(terminalreporter):
    rows = [(report.nodeid, name, value) for report in terminalreporter.stats.get("passed", [])
            for name, value in report.user_properties]
    if rows:
        terminalreporter.section("recorded")
        for nodeid, name, value in rows:
            terminalreporter.write_line(f"{nodeid}  {name} = {value}")


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct, float32: ``(model, tokenizer)``."""
    from dvbench.harness.lm.models import load_model
    from dvbench.harness.records import ModelRef

    return load_model(ModelRef("embedded"))


@pytest.fixture(scope="session")
def benchmark_rows(embedded):
    """``rows(count)``: Alpaca-GPT4 rows of 90-110 tokens under the Alpaca template (the first
    5,000 of ../shared/data's sample), or ``count`` of dvbench's generated rows where it is
    missing."""
    from dvbench.harness.data.files import load_examples
    from dvbench.harness.data.generated import generate
    from dvbench.harness.lm.tokens import Encoder
    from dvbench.harness.template import Template

    shared = Path(__file__).parents[1].parent / "shared" / "data" / "alpaca_gpt4"
    encoder = Encoder(embedded[1], Template())

    def rows(count: int) -> list:
        if shared.is_dir():
            sample = load_examples(shared / "candidates_sample.jsonl")
            return [e for e in sample[:5000] if 90 <= len(encoder.zero_shot(e).ids) <= 110]
        return list(generate(count, 0, 0, families=("sorting", "facts", "dates"))["candidates"])
    return rows
