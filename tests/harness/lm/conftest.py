import pytest

from dvbench.harness.data.generated import generate
from dvbench.harness.template import Template
from dvbench.harness.lm.tokens import Encoder
from dvbench.harness.testing import tiny_lm


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm("float64")


@pytest.fixture(scope="module")
def sequences(tiny):
    """Zero-shot and one-shot sequences of varied lengths (34 to 178 tokens)."""
    data = generate(6, 4, 0, seed=3)
    enc = Encoder(tiny[1], Template(name="plain"))
    return [enc.one_shot(z, x) for z in data["candidates"] for x in data["anchors"]] + \
        [enc.zero_shot(x) for x in data["anchors"]]
