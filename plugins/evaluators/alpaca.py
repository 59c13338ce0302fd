"""The ``alpaca-eval`` package, imported lazily with its side effects kept out of dvbench.

Importing alpaca_eval 0.6.6 sets the root logger to INFO, loads a ``.env`` file into
``os.environ`` (python-dotenv), sets ``KMP_*`` variables and warns that ``pkg_resources`` is
deprecated; its annotators log at INFO. :func:`contained` undoes all of that around every use.
:func:`unmet` reads an annotator's config without importing the package at all.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

# The environment variables each API decoder of alpaca_eval 0.6 reads its credentials from (any
# one will do); decoders not listed (local models, AWS Bedrock's own credential chain) are not checked.
KEYS = {
    "openai_completions": ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_CLIENT_CONFIG_PATH"),
    "anthropic_completions": ("ANTHROPIC_API_KEY",),
    "cohere_completions": ("COHERE_API_KEY",),
    "google_completions": ("GOOGLE_API_KEY",),
    "huggingface_api_completions": ("HUGGINGFACEHUB_API_TOKEN",),
    "jinachat_completions": ("JINA_CHAT_API_KEY",),
}


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


def annotate(annotator: str, instructions: Sequence[str], baseline: Sequence[str], outputs: Sequence[str]) -> list[float]:
    """Preferences of an alpaca_eval annotator config (a name such as ``weighted_alpaca_eval_gpt4_turbo``,
    or a path to a ``configs.yaml``) between the baseline's outputs (``output_1``) and the model's
    (``output_2``). API annotators need their keys in the environment; nothing is cached on disk."""
    with contained():
        from alpaca_eval.annotators import PairwiseAnnotator

        judge = PairwiseAnnotator(annotators_config=annotator, caching_path=None)
        annotated = judge.annotate_head2head(
            outputs_1=[{"instruction": i, "output": o} for i, o in zip(instructions, baseline)],
            outputs_2=[{"instruction": i, "output": o} for i, o in zip(instructions, outputs)],
        )
    return [float(a["preference"]) if a.get("preference") is not None else float("nan") for a in annotated]


def unmet(annotator: str) -> str | None:
    """Why the annotator config (a name or a path, found as alpaca_eval finds it) cannot run here:
    it does not exist, or no credential its decoder reads is in the environment; None if it can."""
    import yaml

    path = Path(find_spec("alpaca_eval").origin).parent / "evaluators_configs" / annotator  # a dependency
    path = path / "configs.yaml" if path.is_dir() else path
    if not path.is_file():
        return (f"no alpaca_eval annotator config {annotator!r}: give a folder name of alpaca_eval's "
                f"evaluators_configs (e.g. weighted_alpaca_eval_gpt4_turbo) or the absolute path of a configs.yaml")
    try:
        configs = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"annotator config {path} cannot be read ({type(error).__name__}); check the file"
    for entry in configs.values() if isinstance(configs, dict) else ():
        decoder = entry.get("fn_completions") if isinstance(entry, dict) else None
        names = KEYS.get(decoder, ())
        if names and not any(os.environ.get(name) for name in names):
            alternatives = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
            return (f"annotator {annotator!r} calls {decoder}, which needs {names[0]}{alternatives} in the "
                    f"environment; set it, or judge with local_lm")
    return None
