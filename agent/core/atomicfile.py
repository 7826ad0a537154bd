"""Files the agent owns: replaced atomically, read and created without following a link we did not make.

``write_atomically``: a reader sees the whole old file or the whole new one, never a mix. The new content
goes to a temporary file in the same directory (same filesystem, so ``rename`` is atomic), created
exclusively and without following links (``O_EXCL | O_NOFOLLOW``, mode 0600 whatever the umask), is
fsynced, gets its permission bits (``mode``, else the old regular file's, else 0600), and is renamed over
the old one; the directory is fsynced so the rename survives a crash. Everything happens relative to one
open descriptor of the directory, so the directory checked (``check_directory``) is the one written to.
If anything fails, the temporary file is removed and the old file is untouched.

A symbolic link at ``path`` is replaced, never followed: whoever planted it does not get our content
written where it points. One helper for every single file the agent and its tools replace: the endpoint
token, the record of what the app was told, an env file outside the output directory, .env edits,
rotation backups, the emulator's data file.

``read_regular_file``: the content of a file we wrote, read only when it is still a regular file (not a
link, a FIFO or a device: nothing blocks, nothing is read through a link) of bounded size.
``make_directories``: a directory and its missing parents, each created with the mode we intend whatever
the umask.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

NEW_FILE_MODE = 0o600
"""Permission bits of a file that did not exist before (it holds secrets)."""
SHARED_DIR_MODE = 0o755
"""The output directory and its parents: apps in other containers (other users) must traverse them to
reach the files, whose own modes guard them (as the kubelet does)."""

_TEMPORARY_SUFFIX = ".tmp"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomically(
    path: Path,
    data: bytes,
    *,
    new_mode: int = NEW_FILE_MODE,
    mode: int | None = None,
    check_directory: Callable[[os.stat_result], None] | None = None,
) -> None:
    """Replace ``path`` with ``data``. The file gets ``mode`` when given, else keeps the old regular
    file's mode, else ``new_mode``. ``check_directory`` gets the status of the directory actually written
    to and may raise to refuse it. Raises OSError (the old file is then intact)."""
    name = path.name
    directory = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if check_directory is not None:
            check_directory(os.fstat(directory))
        if mode is None:
            mode = _mode_of_regular_file(name, directory, new_mode)
        fd, temporary = _create_temporary(name, directory)
        try:
            try:
                os.fchmod(fd, mode)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=directory)
            raise
        os.fsync(directory)
    finally:
        os.close(directory)


def read_regular_file(
    path: Path | str, max_bytes: int, *, dir_fd: int | None = None, follow_links: bool = False
) -> bytes:
    """The content of ``path`` (relative to ``dir_fd`` when given), read only if it is a regular file of at
    most ``max_bytes``: a link at its last component is not followed (OSError ELOOP; ``follow_links`` for
    a file the user names, such as a mounted Kubernetes Secret, made of links), a FIFO or device is not
    read (EINVAL, and opening it never blocks), a bigger file is not read (EFBIG)."""
    return read_regular_file_status(path, max_bytes, dir_fd=dir_fd, follow_links=follow_links)[1]


def read_regular_file_status(
    path: Path | str, max_bytes: int, *, dir_fd: int | None = None, follow_links: bool = False
) -> tuple[os.stat_result, bytes]:
    """``read_regular_file``, with the status of the file read (owner, mode, links) from its descriptor."""
    flags = _READ_FLAGS & ~os.O_NOFOLLOW if follow_links else _READ_FLAGS
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not followed", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(max_bytes + 1 - size, 1 << 20) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:  # it grew while we read it
                raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
        return info, b"".join(chunks)
    finally:
        os.close(fd)


def make_directories(path: Path, mode: int) -> None:
    """Create ``path`` and its missing parents, each with exactly ``mode`` whatever the umask (plus the
    setgid bit a new directory inherits: on a Kubernetes ``fsGroup`` volume it gives files the pod's
    group). Directories that already exist are left as they are. Raises OSError."""
    absolute = Path(os.path.abspath(path))
    # Only the missing ones are made: mkdir on an existing ancestor (/, /tmp) would be a write attempt
    # where the agent has no business (a read-only root refuses it; an audit sees it).
    missing: list[Path] = []
    for directory in (absolute, *absolute.parents):
        if os.path.lexists(directory):
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        # Set through a descriptor of the directory just made, never through a link swapped in meanwhile.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode | (os.fstat(fd).st_mode & stat.S_ISGID))
        finally:
            os.close(fd)
    if not absolute.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files a crash in ``write_atomically(path, ...)`` may have left beside it."""
    try:
        leftovers = list(path.parent.glob(f".{glob.escape(path.name)}.*{_TEMPORARY_SUFFIX}"))
    except OSError:
        return
    for leftover in leftovers:
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)


def _create_temporary(name: str, directory: int) -> tuple[int, str]:
    for _ in range(100):
        temporary = f".{name}.{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}"
        try:
            return os.open(temporary, _CREATE_FLAGS, NEW_FILE_MODE, dir_fd=directory), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _mode_of_regular_file(name: str, directory: int, default: int) -> int:
    # lstat: the mode of a planted link's target must not be copied either.
    try:
        status = os.lstat(name, dir_fd=directory)
    except FileNotFoundError:
        return default
    return stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else default
