"""The scoring-regression gate: every valuator of a spec scored again and compared with a golden file.

``dvbench check --golden FILE SPEC`` runs the spec's data, model and valuation stages and compares
each valuator's scores with ``FILE``, candidate by candidate, within that valuator's tolerance
(``|got − expected| ≤ atol + rtol·|expected|``, numpy's ``isclose``). ``--update`` writes the file,
keeping any tolerance already in it. The file is JSON, so a change shows in review:

    {"dvbench_golden": 1, "spec": "<name>",
     "valuators": {"<label>": {"tolerance": {"rtol": 1e-05, "atol": 1e-08},
                               "scores": {"<candidate id>": <score>, ...}}, ...}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from dvbench.harness.artifacts import json_text, write_text_atomic
from dvbench.harness.errors import InputError
from dvbench.harness.records import Scores

FORMAT = 1
TOLERANCE = {"rtol": 1e-5, "atol": 1e-8}  # across CPUs and BLAS builds; edit per valuator in the file


@dataclass(frozen=True)
class Drift:
    """One disagreement: a candidate's score out of tolerance, or a valuator or candidate that is
    in one side only (``expected`` or ``got`` is then ``None``)."""

    valuator: str
    candidate: str
    expected: float | None
    got: float | None


def read(path: Path) -> dict:
    try:
        golden = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no golden file; write it with `dvbench check --golden {path} --update SPEC`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a golden file ({error}); write it again with --update") from None
    if not isinstance(golden, dict) or golden.get("dvbench_golden") != FORMAT or not isinstance(golden.get("valuators"), dict):
        raise InputError(f"{path}: not a dvbench golden file (format {FORMAT}); write it again with --update")
    return golden


def write(path: Path, spec_name: str, scores: dict[str, Scores]) -> None:
    """Save ``scores`` as the golden file, keeping the tolerances an existing file sets."""
    previous = read(path)["valuators"] if path.is_file() else {}
    golden = {"dvbench_golden": FORMAT, "spec": spec_name, "valuators": {
        label: {"tolerance": previous.get(label, {}).get("tolerance", dict(TOLERANCE)),
                "scores": {cid: float(v) for cid, v in zip(s.candidate_ids, s.values)}}
        for label, s in scores.items()}}
    write_text_atomic(path, json_text(golden, indent=1))


def compare(golden: dict, scores: dict[str, Scores]) -> list[Drift]:
    """Every disagreement between the golden file and ``scores``."""
    drifts = []
    for label in sorted(set(golden["valuators"]) | set(scores)):
        if label not in scores:
            drifts.append(Drift(label, "(every candidate)", math.nan, None))
            continue
        if label not in golden["valuators"]:
            drifts.append(Drift(label, "(every candidate)", None, math.nan))
            continue
        entry = golden["valuators"][label]
        tolerance = entry.get("tolerance", TOLERANCE)
        expected = entry["scores"]
        got = dict(zip(scores[label].candidate_ids, (float(v) for v in scores[label].values)))
        for cid in [*expected, *(c for c in got if c not in expected)]:
            want, have = expected.get(cid), got.get(cid)
            if want is None or have is None or not _close(have, want, tolerance["rtol"], tolerance["atol"]):
                drifts.append(Drift(label, cid, want, have))
    return drifts


def _close(got: float, expected: float, rtol: float, atol: float) -> bool:
    if math.isnan(got) or math.isnan(expected):
        return math.isnan(got) and math.isnan(expected)
    return abs(got - expected) <= atol + rtol * abs(expected)
