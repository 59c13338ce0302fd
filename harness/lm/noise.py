"""The numerical noise floor of a difference of two answer scores.

A difference-based score (``one_step``'s ``s_zs(x; θ') − s_zs(x; θ)``, ``icp``'s
``s_os(x, z) − s_zs(x)``) compares two forwards that round differently. How much rounding alone
moves a score is measured on the unchanged model: each anchor is scored again alone (a batch of
one, no padding) and compared with its score in the valuator's own batches. The floor is the
largest of those |differences|: the spread that batch layout alone causes, in the precision the
valuator computes in (0 or close to it in float64, about 1e-6 in float32). A pair whose
|difference| is at most the floor is indistinguishable from rounding.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from dvbench.harness.lm.tokens import Sequence


def rescoring_spread(model, sequences: Seq[Sequence], batched: np.ndarray) -> float:
    """``max_i |batched[i] − s(sequences[i])|``, each sequence scored alone; ``batched``: the mean
    answer log-probabilities of ``sequences`` as the valuator's batches gave them."""
    from dvbench.harness.lm.loglik import answer_loglik  # torch: imported when scoring

    if not len(sequences):
        return 0.0
    alone = answer_loglik(model, sequences, batch_size=1).mean
    return float(np.abs(np.asarray(batched) - alone).max())


def noise_stats(difference: np.ndarray, floor: float) -> dict[str, float]:
    """``noise_floor`` and ``below_noise_floor``: the share of pairs with ``|difference| ≤ floor``."""
    below = float((np.abs(difference) <= floor).mean()) if difference.size else 0.0
    return {"noise_floor": float(floor), "below_noise_floor": below}
