"""Writing files safely: atomically (temporary file + rename) and with the permissions the user expects.

Every output pointseg writes (label PNGs, summary.csv, model files, the app's exports and predictions) goes
through :func:`atomic_write_bytes`, so a crash or a full disk never leaves a half-written file in place of a
good one, and the file gets the mode any other program would give it under the user's umask (0644 under
umask 022). ``tempfile.mkstemp`` alone creates 0600 files, which other users and services cannot read.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), default_file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
