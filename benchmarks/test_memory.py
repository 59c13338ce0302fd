"""Peak resident memory of the gradient valuators on real rows: one ``dvbench run`` per valuator.

    python -m pytest benchmarks/test_memory.py -s

8 Alpaca-GPT4 candidates (``--limit 8`` of ../shared/data's sample, drawn by the spec's seed) and
the first 10 K-Means-100 anchors, the embedded model (float32), ``tracked: mlp``, each
valuator's defaults otherwise. Each valuator runs in its own ``dvbench run`` process (model load,
data and valuation stages); its peak resident set size is the kernel's (``ru_maxrss`` from
``os.wait4``), so it counts everything the process held. Bounds (specs/README.md): ``grad_ip``
and ``ekfac`` with the ``mean`` aggregate at most 3 GiB; every path that needs every pair at most
``max_gradient_gb`` + 2 GiB at the default batch size; ``one_step`` is reported. EK-FAC's
factors on disk are reported too. Skipped without ../shared/data.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "alpaca_gpt4"
CANDIDATES, ANCHORS = 8, 10
GIB = 2 ** 30
MAX_GRADIENT_GB = 4.0  # grad_ip's and ekfac's default

CASES = {  # label: (valuator entry, bound in bytes or None)
    "grad_ip": ({"use": "grad_ip"}, 3 * GIB),
    "ekfac": ({"use": "ekfac"}, 3 * GIB),
    "grad_ip_sign_log": ({"use": "grad_ip", "transform": "sign_log"}, (MAX_GRADIENT_GB + 2) * GIB),
    "grad_ip_fraction_positive": ({"use": "grad_ip", "aggregate": "fraction_positive"}, (MAX_GRADIENT_GB + 2) * GIB),
    "ekfac_fraction_positive": ({"use": "ekfac", "aggregate": "fraction_positive"}, (MAX_GRADIENT_GB + 2) * GIB),
    "one_step": ({"use": "one_step"}, None),
}

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real rows not found: {SHARED} is missing")


@pytest.fixture(scope="module")
def anchors(tmp_path_factory) -> Path:
    """The first 10 K-Means-100 anchors, as a file of their own."""
    path = tmp_path_factory.mktemp("anchors") / "anchors.jsonl"
    lines = (SHARED / "kmeans100_anchors.jsonl").read_text().splitlines()[:ANCHORS]
    path.write_text("\n".join(lines) + "\n")
    return path


def peak_rss(command: list[str]) -> int:
    """Run ``command`` to its end; its peak resident set size in bytes (Linux: ru_maxrss in KiB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, stderr[-3000:]
    return usage.ru_maxrss * 1024


@pytest.mark.parametrize("label", list(CASES))
def test_peak_rss(label, anchors, tmp_path, record_property):
    entry, bound = CASES[label]
    spec = {"name": "memory", "seed": 0, "model": {"name": "embedded"}, "tracked": "mlp",
            "data": {"candidates": {"path": str(SHARED / "candidates_sample.jsonl")}, "anchors": {"path": str(anchors)}},
            "valuators": {label: entry}}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))  # JSON is YAML
    dvbench = Path(sys.executable).with_name("dvbench")
    peak = peak_rss([str(dvbench), "run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run"),
                     "--limit", str(CANDIDATES)])
    record_property(f"peak_rss_GiB_{label}", round(peak / GIB, 2))
    print(f"\n{label}: peak RSS {peak / GIB:.2f} GiB")  # with -s
    if entry["use"] == "ekfac":
        factors = sum(f.stat().st_size for f in (tmp_path / "run").rglob("*.safetensors"))
        record_property(f"factors_on_disk_GB_{label}", round(factors / 1e9, 2))
        print(f"{label}: factors on disk {factors / 1e9:.2f} GB")
    if bound is not None:
        assert peak <= bound, f"{label}: peak RSS {peak / GIB:.2f} GiB over its bound {bound / GIB:.1f} GiB"
