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
import re
import shutil
from pathlib import Path

TRACEBACK_ENV = "VSEAM_TRACEBACK"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../vseam
LAST_RUN_FOLDER: Path | None = None  # the run folder this process claimed last (vseam.utils.rundir.claim)
# how writers that do not raise an OSError say that the disk is full: safetensors (Rust's io error, "code: 28,
# kind: StorageFull") and torch.save under Lightning's checkpoints ("PytorchStreamWriter failed writing file ...:
# file write failed", no errno: then the run folder's free space decides)
_FULL_TEXT = re.compile(r"No space left on device|StorageFull|Disk quota exceeded|QuotaExceeded")
_WRITE_FAILED = re.compile(r"file write failed|failed writing file")


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


def said_full(e: BaseException) -> int | None:
    """``errno.ENOSPC`` / ``errno.EDQUOT`` when ``e`` itself says the disk is full (its errno, or the text of a
    writer that raises no OSError); None otherwise."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return e.errno
    text = str(e)
    if _FULL_TEXT.search(text):
        return errno.EDQUOT if "uota" in text else errno.ENOSPC
    return None


def disk_full_line(exc: BaseException) -> str | None:
    """A full disk met by any writer, as one sentence naming the file (the OS error's) or else the run folder;
    None when ``exc`` (or what caused it) is not a full disk."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = said_full(e)
        if code is not None:
            if isinstance(e, OSError) and e.filename is not None:
                return os_error_line(e)
            return _folder_full(code, e)
        if _WRITE_FAILED.search(str(e)) and LAST_RUN_FOLDER is not None:
            try:
                free = shutil.disk_usage(LAST_RUN_FOLDER).free
            except OSError:
                free = None
            if free is not None and free < 1 << 20:  # under 1 MiB left where the run writes
                return _folder_full(errno.ENOSPC, e)
        e = e.__cause__ or e.__context__
    return None


def _folder_full(code: int, e: BaseException) -> str:
    where = f"writing under the run folder {LAST_RUN_FOLDER}" if LAST_RUN_FOLDER is not None else "writing a file"
    first = next((x.strip() for x in str(e).splitlines() if x.strip()), type(e).__name__)
    return f"{where}: {_OS_ADVICE[code]} ({type(e).__name__}: {first[:200]})"


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
    """The one line to show for an error raised on purpose, an OS error of a file or a full disk; None for a bug."""
    full = disk_full_line(exc)
    if full is not None:
        text = full
    elif isinstance(exc, UserError) or (isinstance(exc, (ValueError, RuntimeError, LookupError))
                                      and not isinstance(exc, NotImplementedError) and raised_by_project(exc)):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError):
        text = str(exc) if raised_by_project(exc) and not exc.errno else os_error_line(exc)
    else:
        return None
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def want_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")
