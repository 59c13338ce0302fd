"""Where dvbench may write: every path below a root it owns (the output folder, the cache) must
resolve inside that root. A symbolic link below the root that leads elsewhere is refused with
one line, never followed."""

from __future__ import annotations

import os
from pathlib import Path

from dvbench.harness.errors import InputError


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, if it lies inside ``root`` once both are resolved; else an InputError
    naming the link that leads out."""
    real_root, real = Path(root).resolve(), Path(path).resolve()
    if real.is_relative_to(real_root):
        return real
    link = _first_link(Path(root), Path(path))
    how = f" through the symbolic link {link} -> {os.readlink(link)}" if link else ""
    raise InputError(f"{path} would lie outside {root}{how}; dvbench writes only inside its own folders: "
                     f"remove the link, or give another folder")


def _first_link(root: Path, path: Path) -> Path | None:
    """The first symbolic link on the way from ``root`` down to ``path``, if any."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            return current
    return None
