"""Replace one file atomically: a reader sees the whole old file or the whole new one, never a mix.

The new content goes to a temporary file in the same directory (same filesystem, so ``rename`` is
atomic), is fsynced, gets its permission bits (``mode``, else the old file's, else 0600), and is renamed
over the old one; the directory is fsynced so the rename survives a crash. If anything fails, the
temporary file is removed and the old file is untouched. One helper for every single file the agent and its
tools replace: the endpoint token, the record of what the app was told, .env edits, rotation backups.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o600
"""Permission bits of a file that did not exist before (it holds secrets)."""


def write_atomically(
    path: Path, data: bytes, *, new_mode: int = NEW_FILE_MODE, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data`` (through a symlink, the file it points to is replaced). The file gets
    ``mode`` when given, else keeps the old file's mode, else ``new_mode``."""
    target = path.resolve()
    if mode is None:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = new_mode
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
