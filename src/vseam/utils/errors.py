"""The project's user errors and how the command line shows them: one line ``error: ...``, no traceback.

``UserError`` is the base of every error class the project raises about what the user gave (a config
key, a file, a folder, a model): ``ConfigError``, ``AnnotationError``, ``RunFolderError``, ... Besides
those, an error counts as raised on purpose when a ``raise`` statement of the project's own source
raised it (``ValueError(f"data.categories=... matches no sample")``), and the OS errors of files
(a missing annotation file, a read-only or full disk) are shown with the path and what to do. Anything
else is a bug and keeps its traceback. ``VSEAM_TRACEBACK=1`` (or ``--traceback`` on the command line)
shows the traceback of every error.
"""

from __future__ import annotations

import errno
import linecache
import os
from pathlib import Path

TRACEBACK_ENV = "VSEAM_TRACEBACK"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../vseam


class UserError(Exception):
    """An error about the user's input (a key, a value, a file, a folder); its message names it and what to do."""


# what to do about an OS error of a file, by errno
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free space there or set out_dir to a folder on another disk",
    errno.EDQUOT: "disk quota exceeded: free space there or set out_dir to a folder on another disk",
    errno.EACCES: "permission denied: choose a folder you can write (out_dir=...) or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write (out_dir=...) or fix its permissions",
    errno.EROFS: "read-only file system: set out_dir to a writable folder",
    errno.ENOENT: "no such file or directory: check the path",
    errno.EISDIR: "is a folder, where a file was expected: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EEXIST: "already exists: choose another path",
    errno.ENAMETOOLONG: "file name too long: choose a shorter path",
}


def os_error_line(e: OSError) -> str:
    """An OS error as one sentence: the path(s), what happened, what to do."""
    advice = _OS_ADVICE.get(e.errno or -1, e.strerror or type(e).__name__)
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    if paths:
        return f"{' -> '.join(map(str, paths))}: {advice}"
    return f"{e}" if e.errno is None else f"{advice} ({e})"


def _innermost(tb):
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def raised_by_project(exc: BaseException) -> bool:
    """Whether a ``raise`` statement in the project's source raised ``exc`` (not an operation that failed)."""
    tb = _innermost(exc.__traceback__)
    if tb is None:
        return False
    path = Path(tb.tb_frame.f_code.co_filename)
    try:
        path.resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return False
    line = linecache.getline(str(path), tb.tb_lineno).strip()
    return line.startswith("raise ")


def user_message(exc: BaseException) -> str | None:
    """The one line to show for an error raised on purpose or an OS error of a file; None for a bug."""
    if isinstance(exc, UserError) or (isinstance(exc, (ValueError, RuntimeError, LookupError))
                                      and not isinstance(exc, NotImplementedError) and raised_by_project(exc)):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError):
        text = str(exc) if raised_by_project(exc) and not exc.errno else os_error_line(exc)
    else:
        return None
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def want_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")
