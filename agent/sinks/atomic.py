"""Atomic snapshots of a set of files in one directory, in the kubelet's ``AtomicWriter`` scheme.

Layout of ``root`` (``..``-prefixed names are ours; configuration forbids them for user files)::

    root/..2026_11_28_17_40_01.123456789_k3j9x2/   the current snapshot: real files, written once
    root/..data -> ..2026_11_28_17_40_01.123456789_k3j9x2
    root/username -> ..data/username               one symlink per top-level name
    root/db -> ..data/db                           (``db/password`` lives under it)

A write builds a complete new timestamped directory (files fsynced), then swaps ``..data`` with one
``rename()`` of a temporary symlink. Every open of ``root/<path>`` resolves ``..data`` once, so it sees one
whole snapshot. A reader that needs several files to match (a username and its password) must resolve
``..data`` once for all of them: open ``root/..data`` as a directory and open the files relative to that
descriptor (``openat``), retrying on ENOENT, which means a newer snapshot replaced the one it held.

The writer is not safe for two processes writing one directory at the same time; one agent owns it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent.core.atomicfile import SHARED_DIR_MODE, make_directories
from agent.errors import SinkError
from agent.sinks.current import MAX_FILE_BYTES, OwnSnapshot

log = logging.getLogger(__name__)

DATA_LINK = "..data"
DATA_TMP_LINK = "..data_tmp"
_LINK_TMP_PREFIX = "..link_tmp."
_SNAPSHOT_DIR = re.compile(r"\.\.\d{4}(?:_\d{2}){5}\.\d{9}_[a-z0-9]{6}")
_HIDDEN_NAME = re.compile(r"\.\.[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DIR_MODE = SHARED_DIR_MODE


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot: its bytes (never shown by repr), permission bits and optional owner."""

    data: bytes = field(repr=False)
    mode: int = 0o440
    uid: int | None = None
    """Owner to chown to; None leaves the agent's own (and does not count as a difference)."""
    gid: int | None = None
    """Group to chown to; None leaves what the directory gives (e.g. a Kubernetes fsGroup)."""


def errno_name(error: OSError) -> str:
    """``ENOSPC``, ``EACCES``, ...: the symbolic name of an OSError's errno."""
    return errno.errorcode.get(error.errno or 0, type(error).__name__)


def _failure(what: str, path: Path | str, error: OSError) -> SinkError:
    # strerror and the path only: OSError's str() is fine too, but being explicit keeps values out for sure.
    reason = f"{errno_name(error)}: {error.strerror}" if error.strerror else errno_name(error)
    return SinkError(f"{what} {path}: {reason}")


def validate_path(path: str) -> PurePosixPath:
    """A snapshot path: relative, normalised, no ``..`` component; a ``..name`` only as a hidden top-level
    file (kept inside the snapshot, never linked into ``root``). Raises SinkError naming the path."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or str(pure) != path or str(pure) == ".":
        raise SinkError(f"invalid snapshot path {path!r}: must be a normalised relative path")
    for index, part in enumerate(pure.parts):
        if part == ".." or (part.startswith("..") and (index > 0 or not _HIDDEN_NAME.fullmatch(part))):
            raise SinkError(f"invalid snapshot path {path!r}: '..' names are reserved")
    if pure.parts[0] in (DATA_LINK, DATA_TMP_LINK) or pure.parts[0].startswith(_LINK_TMP_PREFIX):
        raise SinkError(f"invalid snapshot path {path!r}: reserved name")
    if len(pure.parts) > 1 and pure.parts[0].startswith(".."):
        raise SinkError(f"invalid snapshot path {path!r}: hidden files must be top-level")
    return pure


def _check_no_collisions(paths: Mapping[str, PurePosixPath]) -> None:
    for path, pure in paths.items():
        for parent in pure.parents:
            if str(parent) in paths:
                raise SinkError(f"snapshot path {path!r} would be inside file {str(parent)!r}")


def is_hidden(path: str) -> bool:
    """True for ``..name`` entries: part of the snapshot, not linked into the user-visible directory."""
    return path.startswith("..")


class AtomicDirWriter:
    """Writes whole snapshots of files into ``root`` (see the module docstring). Synchronous."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()  # one write at a time even if a caller shares the writer

    # -- reading -----------------------------------------------------------------------------------

    def current_dir_name(self) -> str | None:
        """The timestamped directory ``..data`` points to, or None when there is no snapshot yet."""
        try:
            target = os.readlink(self.root / DATA_LINK)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.EINVAL:  # ..data exists but is not a symlink: not ours
                raise SinkError(
                    f"{self.root / DATA_LINK} is not a symlink; refusing to manage {self.root}"
                ) from None
            raise _failure("cannot read", self.root / DATA_LINK, error) from None
        if not _SNAPSHOT_DIR.fullmatch(target):
            raise SinkError(f"{self.root / DATA_LINK} points to {target!r}, not a snapshot directory of ours")
        return target

    def current(
        self, paths: Iterable[str] | None = None, *, max_file_bytes: int = MAX_FILE_BYTES
    ) -> dict[str, bytes]:
        """The files of the current snapshot (relative path -> bytes), hidden ones included; {} if none.
        With ``paths``, only those (the missing ones are left out), without listing the rest.

        Used to adopt what a previous agent wrote, so only what we could have written is read (see
        ``agent.sinks.current``): a snapshot directory that is a link, is not ours or holds anything but
        directories and regular files of at most ``max_file_bytes`` raises SinkError, as does one that
        cannot be read.
        """
        name = self.current_dir_name()
        if name is None:
            return {}
        result: dict[str, bytes] = {}
        try:
            with OwnSnapshot(self.root, name) as snapshot:
                for relative in snapshot.files() if paths is None else paths:
                    found = snapshot.read(str(validate_path(relative)), max_file_bytes)
                    if found is not None:
                        result[relative] = found[1]
        except OSError as error:
            raise _failure("cannot read the current snapshot in", self.root / name, error) from None
        return result

    def snapshot_time(self) -> float | None:
        """Unix time the current snapshot was swapped in (mtime of the ``..data`` link), or None."""
        try:
            return os.lstat(self.root / DATA_LINK).st_mtime
        except OSError:
            return None

    # -- cleanup -----------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove what a crashed write left behind: snapshot directories ``..data`` does not point to,
        ``..data_tmp``, temporary links and user-visible links of ours that dangle. Returns the removed
        names. Touches nothing that is not ours. Call it once at start, before the first write."""
        with self._lock:
            return self._cleanup()

    def _cleanup(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise _failure("cannot list", self.root, error) from None
        current = self.current_dir_name()
        removed: list[str] = []
        for entry in entries:
            name = entry.name
            try:
                if _SNAPSHOT_DIR.fullmatch(name) and name != current and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                elif self._is_leftover_link(entry):
                    os.unlink(entry.path)
                else:
                    continue
            except OSError as error:
                raise _failure("cannot remove leftover", entry.path, error) from None
            removed.append(name)
        if removed:
            log.info("removed %d leftover(s) of an interrupted write in %s", len(removed), self.root)
        return removed

    def _is_leftover_link(self, entry: os.DirEntry[str]) -> bool:
        """A temporary link of an interrupted write, or a link of ours whose target is not in ``..data``."""
        if not entry.is_symlink():
            return False
        if entry.name == DATA_TMP_LINK or entry.name.startswith(_LINK_TMP_PREFIX):
            return True
        return self._is_our_link(entry.name) and not os.path.lexists(self.root / DATA_LINK / entry.name)

    def _is_our_link(self, name: str) -> bool:
        """A user-visible link we created: ``name -> ..data/name``."""
        try:
            return os.readlink(self.root / name) == f"{DATA_LINK}/{name}"
        except OSError:
            return False

    # -- writing -----------------------------------------------------------------------------------

    def write(self, files: Mapping[str, FileEntry]) -> bool:
        """Make ``files`` the snapshot in one atomic swap; False (nothing touched) when already identical.

        Raises SinkError (what failed, which path, the errno name; never data) with the previous snapshot
        intact and the half-written directory removed.
        """
        paths = {path: validate_path(path) for path in files}
        _check_no_collisions(paths)
        tops = {pure.parts[0] for pure in paths.values() if not is_hidden(str(pure))}
        with self._lock:
            self._make_root()
            self._check_user_entries(tops)
            old = self.current_dir_name()
            if old is not None and self._unchanged(old, files, tops):
                return False
            new = self._new_snapshot_dir()
            created: list[Path] = []
            try:
                self._fill(new, files)
                self._link_tops(tops, created)  # before the swap: a new name appears with its data
                self._swap(new.name)
            except BaseException:
                for link in created:
                    _remove_quietly(link)
                shutil.rmtree(new, ignore_errors=True)
                raise
            self._finish(old, tops)
            return True

    def _make_root(self) -> None:
        try:
            make_directories(self.root, _DIR_MODE)  # the output directory and its parents, whatever the umask
        except OSError as error:
            raise _failure("cannot create the output directory", self.root, error) from None

    def _check_user_entries(self, tops: set[str]) -> None:
        """Refuse to shadow a file or link in ``root`` that we did not create."""
        for top in sorted(tops):
            path = self.root / top
            if os.path.lexists(path) and not self._is_our_link(top):
                raise SinkError(
                    f"{path} exists and was not created by secrets-agent; remove it or choose another file"
                )

    def _unchanged(self, old: str, files: Mapping[str, FileEntry], tops: set[str]) -> bool:
        try:
            with OwnSnapshot(self.root, old) as snapshot:
                if set(snapshot.files()) != set(files):
                    return False
                for relative, entry in files.items():
                    found = snapshot.read(relative, len(entry.data))
                    if found is None or not _same_file(*found, entry):
                        return False
        except (OSError, SinkError):
            return False  # unreadable, vanished or not ours: rewriting is the safe answer
        return all(self._is_our_link(top) for top in tops) and not self._stale_links(tops)

    def _stale_links(self, tops: set[str]) -> list[str]:
        try:
            names = os.listdir(self.root)
        except OSError as error:
            raise _failure("cannot list", self.root, error) from None
        return sorted(name for name in names if name not in tops and self._is_our_link(name))

    def _new_snapshot_dir(self) -> Path:
        for _ in range(10):
            now = time.time_ns()
            stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 1_000_000_000))
            suffix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6))
            path = self.root / f"..{stamp}.{now % 1_000_000_000:09d}_{suffix}"
            try:
                path.mkdir(mode=0o700)
                _set_dir_mode(path)
            except FileExistsError:
                continue
            except OSError as error:
                shutil.rmtree(path, ignore_errors=True)
                raise _failure("cannot create snapshot directory", path, error) from None
            return path
        raise SinkError(f"cannot create a unique snapshot directory in {self.root}")

    def _fill(self, directory: Path, files: Mapping[str, FileEntry]) -> None:
        made = {directory}
        for relative in sorted(files):
            target = directory / relative
            # Only the folders inside the snapshot (validate_path made `relative` normalised and relative):
            # walking target.parents up to / cost more than the writes themselves on tmpfs.
            for inner in reversed(PurePosixPath(relative).parents[:-1]):
                parent = directory / inner
                if parent in made:
                    continue
                try:
                    parent.mkdir(mode=0o700)
                    _set_dir_mode(parent)
                except OSError as error:
                    raise _failure("cannot create directory", parent, error) from None
                made.add(parent)
            _write_file(target, files[relative])
        for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(path)

    def _link_tops(self, tops: set[str], created: list[Path]) -> None:
        """Create missing ``root/<top> -> ..data/<top>`` links, appending each to ``created`` so that a
        failed write can take them back. A missing name needs no temporary link and rename: ``symlink()``
        creates it atomically, and fails (EEXIST) if anything took the name since ``_check_user_entries``
        looked, which is refused rather than replaced."""
        for top in sorted(tops):
            if self._is_our_link(top):
                continue
            try:
                os.symlink(f"{DATA_LINK}/{top}", self.root / top)
            except OSError as error:
                raise _failure("cannot create link", self.root / top, error) from None
            created.append(self.root / top)

    def _swap(self, new_name: str) -> None:
        temporary = self.root / DATA_TMP_LINK
        _remove_quietly(temporary)
        try:
            os.symlink(new_name, temporary)
            os.rename(temporary, self.root / DATA_LINK)
        except OSError as error:
            _remove_quietly(temporary)
            raise _failure("cannot swap", self.root / DATA_LINK, error) from None

    def _finish(self, old: str | None, tops: set[str]) -> None:
        """After the swap the write has succeeded; leftovers here are logged and removed by a later
        cleanup(), never reported as a failed write (the new snapshot is already live)."""
        try:
            for name in self._stale_links(tops):
                os.unlink(self.root / name)
            _fsync_dir(self.root)  # the swap and the link changes survive a power cut (a no-op on tmpfs)
            if old is not None:
                shutil.rmtree(self.root / old)
        except (OSError, SinkError) as error:
            detail = errno_name(error) if isinstance(error, OSError) else str(error)
            log.warning("snapshot swapped in %s, but removing the previous one failed: %s", self.root, detail)


def _same_file(info: os.stat_result, data: bytes, entry: FileEntry) -> bool:
    if stat.S_IMODE(info.st_mode) != entry.mode:
        return False
    if entry.uid is not None and info.st_uid != entry.uid:
        return False
    if entry.gid is not None and info.st_gid != entry.gid:
        return False
    return data == entry.data


def _write_file(path: Path, entry: FileEntry) -> None:
    # O_EXCL|O_NOFOLLOW: the directory is brand new, so anything already there is an attack or a bug. 0600
    # until the final mode and owner are set: nobody else can open it while it is being written.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        raise _failure("cannot create", path, error) from None
    try:
        view = memoryview(entry.data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if entry.uid is not None or entry.gid is not None:
            _chown(fd, path, entry)
        os.fchmod(fd, entry.mode)
        os.fsync(fd)
    except SinkError:
        raise
    except OSError as error:
        raise _failure("cannot write", path, error) from None
    finally:
        os.close(fd)


def _chown(fd: int, path: Path, entry: FileEntry) -> None:
    uid = -1 if entry.uid is None else entry.uid
    gid = -1 if entry.gid is None else entry.gid
    try:
        os.fchown(fd, uid, gid)
    except PermissionError as error:
        raise SinkError(
            f"cannot chown {path} to uid {entry.uid} gid {entry.gid}: {errno_name(error)} "
            "(setting uid/gid needs root or CAP_CHOWN)"
        ) from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise _failure("cannot open directory", path, error) from None
    try:
        os.fsync(fd)
    except OSError as error:
        raise _failure("cannot sync directory", path, error) from None
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot remove %s: %s", path, errno_name(error))


def _set_dir_mode(path: Path) -> None:
    """``_DIR_MODE`` whatever the umask, keeping the setgid bit a new directory inherits: on a volume with a
    Kubernetes ``fsGroup`` the kubelet marks the root setgid so every file gets the pod's group, and a plain
    chmod would end that for the files of this directory."""
    inherited = os.stat(path).st_mode & stat.S_ISGID
    os.chmod(path, _DIR_MODE | inherited)
