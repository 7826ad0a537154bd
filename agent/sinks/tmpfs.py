"""Is the output directory memory-backed? Secrets on a disk outlive the pod; on tmpfs/ramfs they do not."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from agent.errors import SinkError

log = logging.getLogger(__name__)

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
PROC_MOUNTS = Path("/proc/mounts")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in paths as \040, \011, \012 and \134.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match[1], 8)), field)


def _existing_ancestor(path: Path) -> Path:
    """``path`` resolved, or its nearest existing ancestor (the output directory may not exist yet)."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate.resolve()
    return Path("/")


def filesystem_type_from_mounts(mounts: str, path: Path) -> str | None:
    """The filesystem type of the mount holding ``path`` (already absolute and resolved), from the text of
    ``/proc/mounts``: the longest mount point containing it, the last one listed when several are stacked
    on the same point. None when no line matches."""
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point, fs_type = Path(_unescape(fields[1])), fields[2]
        if path == mount_point or path.is_relative_to(mount_point):
            depth = len(mount_point.parts)
            if best is None or depth >= best[0]:
                best = (depth, fs_type)
    return None if best is None else best[1]


def filesystem_type(path: Path, mounts_file: Path = PROC_MOUNTS) -> str:
    """The filesystem type of ``path`` (or of its nearest existing ancestor) per ``/proc/mounts``;
    ``"unknown"`` when that cannot be read or says nothing."""
    try:
        mounts = mounts_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    return filesystem_type_from_mounts(mounts, _existing_ancestor(path)) or "unknown"


def check_memory_backed(path: Path, require: bool, mounts_file: Path = PROC_MOUNTS) -> None:
    """Warn (or, with ``require``, raise SinkError) when ``path`` is not on tmpfs or ramfs."""
    fs_type = filesystem_type(path, mounts_file)
    if fs_type in MEMORY_FILESYSTEMS:
        return
    message = (
        f"output directory {path} is on {fs_type}, not on a memory-backed filesystem (tmpfs/ramfs): "
        "secrets written there can outlive the pod; in Kubernetes use an emptyDir with medium: Memory"
    )
    if require:
        raise SinkError(message + " (refusing: --require-tmpfs)")
    log.warning("%s", message)
