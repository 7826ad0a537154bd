"""``rotate --backup-dir``: the value being replaced, kept in a private file before anything changes.

The directory is created 0700 and must not be readable by group or others (refused otherwise: a backup of
secrets in a world-readable place is a leak). Each file is ``<secret>.v<version>``, mode 0600, written by
``agent.secrets.atomicfile`` (temporary file, fsync, rename), so a crash never leaves a half-written backup
under the final name.
"""

from __future__ import annotations

import stat
from pathlib import Path

from agent.core.atomicfile import write_atomically
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
    try:
        write_atomically(target, value)
    except OSError as error:
        raise BackupError(f"backup of {secret_id!r} to {target}: {error.strerror}") from None
    return target
