"""``rotate --backup-dir``: the value being replaced, kept in a private file before anything changes.

The directory (and any missing parent) is created 0700 whatever the umask. It must be a directory of the
user running ``rotate``, not open to group or others: a backup of secrets in a place another user can read,
or can write (and so swap or plant files in), is a leak; such a directory is refused with a message saying
how to fix it. Each file is ``<secret>.v<version>``, mode 0600 always (an older file of another mode is
replaced, not kept), written by ``agent.core.atomicfile`` (temporary file, fsync, rename, a link planted at
the name replaced and never followed) in the very directory that was checked, so a crash never leaves a
half-written backup under the final name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.core.atomicfile import make_directories, write_atomically
from agent.errors import AgentError

BACKUP_DIR_MODE = 0o700
"""Mode of a backup directory (and of the parents) ``rotate`` creates."""
BACKUP_FILE_MODE = 0o600
"""Mode of every backup file, whatever mode an older file of the same name had."""


class BackupError(AgentError):
    """The backup directory or file could not be made safely; names the path, never the value."""


def check_backup_dir(directory: Path) -> Path:
    """Create ``directory`` (0700) if needed; BackupError if it is not a private directory of ours."""
    try:
        make_directories(directory, BACKUP_DIR_MODE)
        info = os.stat(directory)
    except OSError as error:
        raise BackupError(f"backup dir {directory}: {error.strerror}") from None
    _check_private(directory, info)
    return directory


def _check_private(directory: Path, info: os.stat_result) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise BackupError(f"backup dir {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise BackupError(
            f"backup dir {directory} belongs to uid {info.st_uid}, not to the user running rotate "
            f"(uid {os.geteuid()}): use a directory of your own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise BackupError(
            f"backup dir {directory} is open to group or others (mode {mode:04o}): chmod 700 {directory}"
        )


def backup_path(directory: Path, secret_id: str, version: str) -> Path:
    """Where the backup of ``secret_id``'s ``version`` goes."""
    return directory / f"{secret_id}.v{version}"


def write_backup(directory: Path, secret_id: str, version: str, value: bytes) -> Path:
    """Write ``value`` to ``<directory>/<secret>.v<version>`` (0600, atomically); return the path."""
    check_backup_dir(directory)
    target = backup_path(directory, secret_id, version)
    try:
        # The directory is checked again through the descriptor written to: not swapped since the check.
        write_atomically(
            target, value, mode=BACKUP_FILE_MODE, check_directory=lambda info: _check_private(directory, info)
        )
    except OSError as error:
        raise BackupError(f"backup of {secret_id!r} to {target}: {error.strerror}") from None
    return target
