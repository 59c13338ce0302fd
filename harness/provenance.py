"""What a run ran on, for ``run.json``: package versions, plugin distributions, git commits, hardware.

Every lookup answers ``None`` rather than fail: a package not installed, a folder that is no git
checkout (or no git at all), a class that no installed distribution provides.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from dvbench.harness.plugins import ENTRY_POINT_GROUP

PACKAGES = ("dvbench", "torch", "transformers", "numpy", "polars", "pydantic", "alpaca-eval")


def versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Python's version and each installed distribution's (``None``: not installed) of
    :data:`PACKAGES` and ``extra`` (the plugins' distributions)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in dict.fromkeys(PACKAGES + extra)}}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def distribution(cls: type) -> dict[str, str | None] | None:
    """``{"name", "version"}`` of the distribution that provides plugin class ``cls``: dvbench's
    for the built-ins, else that of the ``dvbench`` entry point whose top-level package holds
    ``cls``; ``None`` for a class no entry point provides (one registered by hand)."""
    top = cls.__module__.split(".")[0]
    if top == "dvbench":
        return {"name": "dvbench", "version": _version("dvbench")}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.module.split(".")[0] == top and entry.dist is not None:
            return {"name": entry.dist.name, "version": entry.dist.version}
    return None


def git(path: Path) -> dict[str, str | bool] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (a file): ``dirty`` when a
    tracked file differs from the commit or ``path`` itself is not committed; ``None`` when
    ``path`` is in no checkout or is ignored by it (an installed package inside a project's
    ignored virtual environment), or git is missing."""
    path = Path(path).resolve()
    commit = _git(path.parent, "rev-parse", "HEAD")
    if commit is None or _git(path.parent, "check-ignore", "-q", path.name) is not None:
        return None
    changed = _git(path.parent, "status", "--porcelain", "--untracked-files=no")
    committed = _git(path.parent, "ls-files", "--error-unmatch", path.name) is not None
    return {"commit": commit, "dirty": bool(changed) or not committed}


def _git(folder: Path, *args: str | Path) -> str | None:
    """git's output in ``folder``, or ``None`` when it fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *map(str, args)], capture_output=True, text=True,
                              timeout=10, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def hardware() -> dict:
    """The CPU's model, its logical cores (and those this process may use), the memory in GiB,
    and the names of the GPUs torch sees (``None`` when torch was not loaded: no model ran)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "gpus": _gpus()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str] | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
