"""Writing files safely: atomically (temporary file + rename) and with the permissions the user expects.

Every output pointseg writes (label PNGs, summary.csv, model files, the app's exports and predictions) goes
through :func:`atomic_write_bytes`, so a crash or a full disk never leaves a half-written file in place of a
good one, and the file gets the mode any other program would give it under the user's umask (0644 under
umask 022). ``tempfile.mkstemp`` alone creates 0600 files, which other users and services cannot read.
"""
from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

from pointseg.errors import OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (reading it means setting it, hence the lock and the immediate restore)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode of a new regular file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The folder is created if needed; the file ends up with :func:`default_file_mode`.

    >>> atomic_write_bytes(Path(tmp) / "x.txt", b"hi")   # doctest: +SKIP
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), default_file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        # a full or read-only disk, no permission, a folder in the way: one line that says what to do;
        # still an OSError (OutputError is both), so callers that handle disk errors keep working
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; {_write_fix(exc)}", exc.errno) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _write_fix(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "free some disk space or write to another disk"
    if exc.errno == errno.EROFS:
        return "the disk is read-only; write somewhere else"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "you may not write there; choose another path or fix its permissions"
    if exc.errno == errno.EISDIR:
        return "a folder of that name is in the way; choose a file name"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way of a folder on that path; choose another path"
    return "choose another output path"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
