"""One folder, one writer: a run holds an exclusive lock on its output folder.

The lock is ``<folder>/.dvbench.lock``, taken with ``flock`` (released by the system when the
process ends, however it ends). While held, the file names the holder's process id; a second
run on the same folder is refused with one line naming it. The file is emptied before release,
so a finished run leaves the same bytes whoever ran it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dvbench.harness.errors import InputError

NAME = ".dvbench.lock"


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; refuse (InputError) if another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder; give another --out (or remove the file)")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / NAME, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputError(f"{folder} is being written by another dvbench run ({holder}); wait for it to "
                             f"finish, or give another --out") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
