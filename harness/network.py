"""The network switch: dvbench is offline unless a spec or the environment allows downloads."""

from __future__ import annotations

import os

ALLOW_DOWNLOAD = "DVBENCH_ALLOW_DOWNLOAD"


def downloads_allowed(allowed_here: bool = False) -> bool:
    """Whether the Hugging Face Hub may be reached: the spec allows it here, or the environment
    sets ``DVBENCH_ALLOW_DOWNLOAD`` to ``1``, ``true`` or ``yes`` (any case). dvbench is offline
    otherwise."""
    return allowed_here or os.environ.get(ALLOW_DOWNLOAD, "").strip().lower() in ("1", "true", "yes")
