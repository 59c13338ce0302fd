"""The errors a user can fix, each said in one line: the CLI prints the line and exits 2.

:class:`InputError` is bad input (its message names the file, row or YAML path, the field, and
what to do); :func:`os_error_line` says the same of an operating-system error (a full disk, a
read-only or unreadable path, a folder where a file belongs).
"""

from __future__ import annotations

import errno

KEPT = "finished artifacts are kept and no partial file is"
_TODO = {
    errno.ENOSPC: ("no space left on the device", "free space and run the same command again to resume"),
    errno.EDQUOT: ("disk quota exceeded", "free space and run the same command again to resume"),
    errno.EACCES: ("permission denied", "fix the permissions or give another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or give another path"),
    errno.EROFS: ("read-only file system", "give an output folder on a writable disk (--out)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "remove that file or give another path"),
    errno.EISDIR: ("is a folder, not a file", "give the file's path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EEXIST: ("already exists", "remove it or give another path"),
    errno.ENAMETOOLONG: ("the name is too long", "give a shorter path"),
}


class InputError(ValueError):
    """Bad user input. The message names the file, the row or YAML path, the field, and what to do."""


def os_error_line(error: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and what to do."""
    what, todo = _TODO.get(error.errno, (error.strerror or type(error).__name__, "check the path"))
    where = f" ({error.filename})" if error.filename else ""
    return f"{what}{where}; {KEPT}: {todo}"
