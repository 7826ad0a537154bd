"""One agent per output directory: an exclusive ``flock`` on ``<output_dir>/..lock``, held while it runs.

Two agents writing one directory break each other (the second one's new ``.token`` locks every client of
the first out; two snapshot writers race on ``..data``), so ``init``, ``run`` and ``dev`` take this lock
before they touch the directory and refuse to start when another process holds it.

Why a lock file rather than a ``flock`` on the directory itself: anyone who can open a directory can lock
it, and an output directory is readable by the app it serves (0755; an ``emptyDir`` is even 0777), so a
neighbour could keep the agent from ever starting again. The lock file is ours alone (mode 0600, our user),
and it can carry the holder's pid for the refusal message. It is a ``..`` name, the namespace the snapshot
writer reserves for itself, so it never collides with a secret's file and the app does not see it.

The lock is the kernel's: it goes away with the last descriptor, so a process that dies in any way (even
SIGKILL, even on an OOM kill) releases it, and the file left behind is simply locked again by the next
agent. The descriptor is close-on-exec, so children we start never inherit it.

The file is opened without following links (and without blocking on a FIFO), and written only once we hold
its lock and it proved to be a regular file of our user with a single link: anything else planted at
``..lock`` (a link, a hard link to another file, a FIFO, another user's file nobody holds) is replaced,
never written through.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from types import TracebackType

from agent.core.atomicfile import make_directories
from agent.errors import AgentError

log = logging.getLogger(__name__)

LOCK_FILE_NAME = "..lock"
"""In the output directory; ``..`` names are the snapshot writer's, never a secret's file."""
LOCK_FILE_MODE = 0o600
"""Only the agent's user may open it, so only the agent's user can hold it."""
_DIR_MODE = 0o755  # the output directory's mode, as the snapshot writer creates it
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ATTEMPTS = 5  # replacing a planted entry races whoever planted it; give up rather than loop forever
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class OutputDirBusy(AgentError):
    """Another process holds the output directory's lock (the message names the directory and the pid)."""


class OutputDirLock:
    """The lock on one output directory, held from ``acquire()`` until ``release()`` (or process death).

    Use it as a context manager: ``with OutputDirLock(path): ...``."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, creating the directory (mode 0755) and the lock file (0600) when missing.

        Raises OutputDirBusy when another process holds it, AgentError when the directory or the lock
        file cannot be used. On a filesystem without locks it warns and carries on unlocked."""
        try:
            make_directories(self.output_dir, _DIR_MODE)
        except OSError as error:
            raise AgentError(
                f"cannot create the output directory {self.output_dir}: {_reason(error)}"
            ) from None
        for _ in range(_ATTEMPTS):
            fd = self._open()
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):  # e.g. a FIFO: opened without blocking, never used
                    self._replace("not a regular file")
                    continue
                if not self._lock(fd):
                    raise OutputDirBusy(self._busy_message(fd, info))
                if not self._still_named(fd):
                    continue  # replaced between our open and our lock: the lock we hold guards nothing
                problem = _not_ours(info)
                if problem is not None:
                    # Nobody else holds it (we do), and it is no file we may write to: make our own.
                    self._replace(problem)
                    continue
                if stat.S_IMODE(info.st_mode) != LOCK_FILE_MODE:  # created under the umask, or chmodded
                    os.fchmod(fd, LOCK_FILE_MODE)
                self._record_pid(fd)
                self._fd, fd = fd, -1
                return
            finally:
                if fd >= 0:
                    os.close(fd)
        raise AgentError(f"cannot lock the output directory {self.output_dir}: {self.path} keeps changing")

    def release(self) -> None:
        """Give the lock up (closing the descriptor is what releases it); the file stays for the next one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputDirLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- the steps ---------------------------------------------------------------------------------

    def _open(self) -> int:
        """A descriptor of the regular file at the lock file's name, created when missing: opened without
        following a link (a planted link is replaced) and O_NONBLOCK, so a planted FIFO cannot block us."""
        for _ in range(_ATTEMPTS):
            try:
                return os.open(self.path, _OPEN_FLAGS, LOCK_FILE_MODE)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENXIO):  # a symbolic link, or a socket
                    self._replace(f"{_kind_of(self.path)} was there")
                    continue
                if error.errno == errno.EACCES and os.path.lexists(self.path):
                    return self._open_foreign()
                if error.errno == errno.EISDIR:
                    raise AgentError(
                        f"cannot lock the output directory {self.output_dir}: {self.path} is a directory"
                    ) from None
                raise AgentError(f"cannot open the lock file {self.path}: {_reason(error)}") from None
        raise AgentError(f"cannot lock the output directory {self.output_dir}: {self.path} keeps changing")

    def _open_foreign(self) -> int:
        """A lock file we may not write: read-only is enough to learn whether someone holds it."""
        try:
            return os.open(self.path, _READ_FLAGS)
        except OSError as error:
            owner = _owner(self.path)
            raise AgentError(
                f"cannot lock the output directory {self.output_dir}: {self.path} ({_reason(error)}) belongs "
                f"to {owner}, maybe another user's secrets-agent; remove it if none uses this directory"
            ) from None

    def _replace(self, problem: str) -> None:
        """Remove a planted entry at the lock file's name (never what it points to)."""
        log.warning("replacing %s (%s): it was not created by secrets-agent", self.path, problem)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise AgentError(f"cannot replace {self.path} ({problem}): {_reason(error)}") from None

    def _lock(self, fd: int) -> bool:
        """True when we hold the lock now; False when another process does."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            if error.errno in _UNSUPPORTED:
                log.warning(
                    "the filesystem of %s does not support locks: a second agent started on this directory "
                    "would not be detected",
                    self.output_dir,
                )
                return True
            raise AgentError(f"cannot lock {self.path}: {_reason(error)}") from None
        return True

    def _still_named(self, fd: int) -> bool:
        """Is ``fd`` still the file at our name? (Someone may have replaced it between open and lock.)"""
        try:
            named = os.lstat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _record_pid(self, fd: int) -> None:
        """Our pid in the file, for the refusal message a second agent prints (best effort)."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _busy_message(self, fd: int, info: os.stat_result) -> str:
        # The pid is read only from a lock file of ours: a planted hard link's content stays unread.
        pid = _holder_pid(fd) if _not_ours(info) is None else None
        holder = f"process {pid}" if pid is not None else "another process"
        return (
            f"the output directory {self.output_dir} is in use by {holder} (another secrets-agent holds "
            f"{self.path}); stop it first, or give this one another output_dir (--output-dir)"
        )


def _holder_pid(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, when it is a plausible one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdecimal() and 0 < int(text) < 1 << 31 else None


def _not_ours(info: os.stat_result) -> str | None:
    """Why a file at the lock file's name must not be used (and written to), or None when it is ours."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}"
    if info.st_nlink != 1:
        return "a hard link to another file"  # writing our pid would change that other file
    return None


def _owner(path: Path) -> str:
    try:
        return f"uid {os.lstat(path).st_uid}"
    except OSError:
        return "another user"


def _kind_of(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "something"
    return "a symbolic link" if stat.S_ISLNK(mode) else "a socket" if stat.S_ISSOCK(mode) else "something"


def _reason(error: OSError) -> str:
    return error.strerror or errno.errorcode.get(error.errno or 0, type(error).__name__)
