"""The ``alpaca-eval`` package, imported lazily with its side effects kept out of dvbench.

Importing alpaca_eval 0.6.6 sets the root logger to INFO, loads a ``.env`` file into
``os.environ`` (python-dotenv), sets ``KMP_*`` variables and warns that ``pkg_resources`` is
deprecated; its annotators log at INFO. :func:`contained` undoes all of that around every use.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def contained() -> Iterator[None]:
    """Run alpaca_eval code; afterwards the root logger, the environment and the warning filters
    are as they were."""
    root = logging.getLogger()
    level, handlers, env = root.level, list(root.handlers), dict(os.environ)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
        os.environ.clear()
        os.environ.update(env)


def win_rate(preferences: Sequence[float]) -> dict[str, float]:
    """alpaca_eval's head-to-head metrics of preferences (1: baseline wins, 2: model wins, 1.5:
    tie, values between: soft): ``win_rate`` (mean(preference − 1) × 100), ``standard_error``,
    ``n_wins``, ``n_wins_base``, ``n_draws``, ``n_total``, ``discrete_win_rate``."""
    with contained():
        from alpaca_eval.metrics import pairwise_to_winrate

        result = pairwise_to_winrate([float(p) for p in preferences])
    return {key: float(value) for key, value in result.items()}


def annotate(annotator: str, reference_outputs: Sequence[dict], model_outputs: Sequence[dict]) -> list[dict]:
    """The annotations of an alpaca_eval annotator config (a name such as
    ``weighted_alpaca_eval_gpt4_turbo``, or a path to a ``configs.yaml``) of the baseline's outputs
    (``output_1``) against the model's (``output_2``), both in alpaca_eval's model-outputs format:
    its records as it writes them to ``annotations.json`` (``preference`` ``None`` where the judge
    gave none). API annotators need their keys in the environment; nothing is cached on disk."""
    with contained():
        import pandas as pd
        from alpaca_eval.annotators import PairwiseAnnotator

        judge = PairwiseAnnotator(annotators_config=annotator, caching_path=None)
        annotated = judge.annotate_head2head(outputs_1=list(reference_outputs), outputs_2=list(model_outputs))
        return json.loads(pd.DataFrame(annotated).to_json(orient="records"))
