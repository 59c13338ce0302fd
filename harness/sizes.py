"""Subset sizes given as a count (an int >= 1) or a fraction of the pool (a float in (0, 1])."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator

from dvbench.harness.config import TypeText
from dvbench.harness.errors import InputError


def _check_size(value: int | float) -> int | float:
    if isinstance(value, int) and value < 1:
        raise ValueError("a count must be at least 1 (or give a fraction such as 0.1)")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError("a fraction must lie in (0, 1] (or give a count such as 100)")
    return value


Size = Annotated[int | float, AfterValidator(_check_size), TypeText("integer ≥ 1 or number in (0, 1]")]


def count_of(size: int | float, total: int, what: str = "selection") -> int:
    """Items that ``size`` keeps of ``total``: a fraction is rounded half up, at least one.

    Raises when a count asks for more than the pool holds.
    """
    if isinstance(size, float):
        return min(total, max(1, math.floor(size * total + 0.5)))
    if size > total:
        raise InputError(f"{what} asks for {size} candidates but the pool holds {total}; lower k or give a fraction")
    return size
