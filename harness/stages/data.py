"""The data stage: the spec's candidates, anchors and eval set, from generated data, files or
the hub. Writes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from dvbench.harness.data.files import load_examples
from dvbench.harness.data.generated import generate
from dvbench.harness.data.hf import load_hub_examples
from dvbench.harness.records import Example
from dvbench.harness.spec import Spec


@dataclass(frozen=True)
class Data:
    candidates: tuple[Example, ...]
    anchors: tuple[Example, ...] = ()
    eval: tuple[Example, ...] = ()


def load_data(spec: Spec) -> Data:
    """The spec's candidates, anchors and eval set (eval rows need no output)."""
    section = spec.settings.data
    if section.generated is not None:
        g = section.generated
        splits = generate(g.candidates, g.anchors, g.eval, defect_fraction=g.defect_fraction,
                          families=tuple(g.families), seed=spec.settings.seed if g.seed is None else g.seed,
                          facts=g.facts)
        return Data(**splits)

    def examples(source, require_output=True):
        if source is None:
            return ()
        if source.dataset is None:
            return load_examples(source.path, split=source.split, require_output=require_output)
        return load_hub_examples(source.dataset, split=source.split or "train", config=source.config,
                                 revision=source.revision, allow_download=source.allow_download,
                                 require_output=require_output)

    return Data(candidates=examples(section.candidates), anchors=examples(section.anchors),
                eval=examples(section.eval, require_output=False))
