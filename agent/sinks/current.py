"""Reading the current snapshot back (adoption after a restart, the unchanged check before a write),
accepting only what this agent could have written.

Anyone who can write into the output directory (another container sharing the volume) can plant a
``..<timestamp>`` directory and point ``..data`` at it. So a snapshot directory is read only when it is a
real directory, not a link, owned by this user and writable by nobody else (which also means nobody else
put anything in it); inside, only directories and regular files (one link each: a hard link to a host
file is not ours) are accepted, opened relative to their directory without following links (``openat``
with ``O_NOFOLLOW``), never blocking (a FIFO is refused, not read) and each bounded in size; listings are
bounded in depth and in number of entries. Anything else makes the whole snapshot "not ours": SinkError,
nothing big read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath
from types import TracebackType

from agent.core.atomicfile import read_regular_file_status
from agent.errors import SinkError

MAX_FILE_BYTES = 1 << 20
"""Largest file read back: 16x what one Secret Manager version holds (64 KiB)."""
MAX_ENTRIES = 10_000
"""Most names listed in one snapshot (files and directories): far more than any pod's secrets."""
MAX_DEPTH = 32
"""Deepest directory nesting listed in one snapshot."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OwnSnapshot:
    """An open snapshot directory of ours (a context manager); SinkError from ``open`` when it is not."""

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        """FileNotFoundError when ``root/name`` is missing, SinkError when it is not ours."""
        self.where = os.path.join(root, name)
        self._fd = _open_own_directory(self.where, None, self.where)

    def __enter__(self) -> OwnSnapshot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def files(self) -> list[str]:
        """The relative paths of the regular files of the snapshot, sorted. SinkError for anything that is
        not a directory or a regular file, too deep a tree or too many entries."""
        found: list[str] = []
        budget = [MAX_ENTRIES]
        self._list(os.dup(self._fd), PurePosixPath(), found, budget)
        return sorted(found)

    def read(self, relative: str, max_bytes: int = MAX_FILE_BYTES) -> tuple[os.stat_result, bytes] | None:
        """The status and content of the file at ``relative`` (a validated snapshot path); None when it is
        missing. SinkError when it, or a directory on the way, is not ours."""
        parts = PurePosixPath(relative).parts
        fd = os.dup(self._fd)
        try:
            for index, part in enumerate(parts[:-1]):
                try:
                    inner = _open_own_directory(part, fd, "/".join(parts[: index + 1]), where=self.where)
                except FileNotFoundError:
                    return None
                os.close(fd)
                fd = inner
            try:
                info, data = read_regular_file_status(parts[-1], max_bytes, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as error:
                raise _not_ours(self.where, relative, error.strerror or "unreadable") from None
            if info.st_nlink != 1:
                raise _not_ours(self.where, relative, "a file with several hard links")
            return info, data
        finally:
            os.close(fd)

    def _list(self, fd: int, prefix: PurePosixPath, found: list[str], budget: list[int]) -> None:
        try:
            if len(prefix.parts) > MAX_DEPTH:
                raise _not_ours(self.where, str(prefix), f"nested deeper than {MAX_DEPTH} directories")
            with os.scandir(fd) as entries:
                children = list(_bounded(entries, budget, self.where))
            for entry in children:
                relative = prefix / entry.name
                if entry.is_symlink():
                    raise _not_ours(self.where, str(relative), "a symbolic link")
                if entry.is_dir(follow_symlinks=False):
                    inner = _open_own_directory(entry.name, fd, str(relative), where=self.where)
                    self._list(inner, relative, found, budget)
                elif entry.is_file(follow_symlinks=False):
                    found.append(relative.as_posix())
                else:
                    raise _not_ours(self.where, str(relative), "not a regular file")
        except OSError as error:
            raise _not_ours(self.where, str(prefix), error.strerror or "unreadable") from None
        finally:
            os.close(fd)


def _bounded(
    entries: Iterator[os.DirEntry[str]], budget: list[int], where: str
) -> Iterator[os.DirEntry[str]]:
    for entry in entries:
        budget[0] -= 1
        if budget[0] < 0:
            raise _not_ours(where, ".", f"more than {MAX_ENTRIES} entries")
        yield entry


def _open_own_directory(path: str, dir_fd: int | None, shown: str, *, where: str = "") -> int:
    """A descriptor of the directory ``path`` if it is one of ours: not a link, owned by this user, not
    writable by group or others. FileNotFoundError when missing; SinkError otherwise."""
    label = os.path.join(where, shown) if where else shown
    try:
        fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as error:
        reason = (
            "a symbolic link"
            if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(path, dir_fd)
            else "not a directory"
            if error.errno == errno.ENOTDIR
            else error.strerror or "unreadable"
        )
        raise SinkError(f"{label} is not a snapshot directory of ours: {reason}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise SinkError(f"{label} is not a snapshot directory of ours: owned by uid {info.st_uid}")
        if info.st_mode & 0o022:
            raise SinkError(
                f"{label} is not a snapshot directory of ours: writable by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o})"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(path: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _not_ours(where: str, relative: str, reason: str) -> SinkError:
    return SinkError(f"{os.path.join(where, relative)} is not a file of ours: {reason}")
