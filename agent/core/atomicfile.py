"""Replace one file atomically: a reader sees the whole old file or the whole new one, never a mix.

The new content goes to a temporary file in the same directory (same filesystem, so ``rename`` is
atomic), created exclusively and without following links (``mkstemp``: ``O_EXCL | O_NOFOLLOW``, mode 0600
whatever the umask), is fsynced, gets its permission bits (``mode``, else the old file's, else 0600), and
is renamed over the old one; the directory is fsynced so the rename survives a crash. If anything fails,
the temporary file is removed and the old file is untouched.

A symbolic link at ``path`` is replaced, never followed: whoever planted it does not get our content
written where it points. One helper for every single file the agent and its tools replace: the endpoint
token, the record of what the app was told, an env file outside the output directory, .env edits,
rotation backups, the emulator's data file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o600
"""Permission bits of a file that did not exist before (it holds secrets)."""

_TEMPORARY_SUFFIX = ".tmp"


def write_atomically(
    path: Path, data: bytes, *, new_mode: int = NEW_FILE_MODE, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data``. The file gets ``mode`` when given, else keeps the old regular
    file's mode, else ``new_mode``. Raises OSError (the old file is then intact)."""
    directory = path.parent
    if mode is None:
        mode = _mode_of_regular_file(path, new_mode)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=directory)
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
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files a crash in ``write_atomically(path, ...)`` may have left beside it."""
    try:
        leftovers = list(path.parent.glob(f".{glob.escape(path.name)}.*{_TEMPORARY_SUFFIX}"))
    except OSError:
        return
    for leftover in leftovers:
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)


def _mode_of_regular_file(path: Path, default: int) -> int:
    # lstat: the mode of a planted link's target must not be copied either.
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return default
    return stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else default


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory if str(directory) else ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
