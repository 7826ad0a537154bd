"""``rotate --backup-dir``: the value being replaced, kept in a private file before anything changes.

The directory is created 0700 and must not be readable by group or others (refused otherwise: a backup of
secrets in a world-readable place is a leak). Each file is ``<secret>.v<version>``, mode 0600, written to a
temporary file in the same directory, flushed to disk and renamed into place, so a crash never leaves a
half-written backup under the final name.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from agent.errors import AgentError


class BackupError(AgentError):
    """The backup directory or file could not be made safely; names the path, never the value."""


def check_backup_dir(directory: Path) -> Path:
    """Create ``directory`` (0700) if needed; BackupError if it is not a private directory of ours."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as error:
        raise BackupError(f"backup dir {directory}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise BackupError(f"backup dir {directory} is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise BackupError(
            f"backup dir {directory} is open to group or others (mode {mode:04o}): chmod 700 {directory}"
        )
    return directory


def backup_path(directory: Path, secret_id: str, version: str) -> Path:
    return directory / f"{secret_id}.v{version}"


def write_backup(directory: Path, secret_id: str, version: str, value: bytes) -> Path:
    """Write ``value`` to ``<directory>/<secret>.v<version>`` (0600, atomically); return the path."""
    check_backup_dir(directory)
    target = backup_path(directory, secret_id, version)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{secret_id}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise BackupError(f"backup of {secret_id!r} to {target}: {error.strerror}") from None
    with contextlib.suppress(OSError):  # the rename is durable once the directory is synced
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target
