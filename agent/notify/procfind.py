"""Finding the app's process: by pid file, or by a regex over every process's command line in ``/proc``.

In a pod the agent is not the app's parent; it sees the app only with ``shareProcessNamespace: true``, and
then ``/proc`` lists every container's processes (PID 1 is the pause container). Everything here is
synchronous and cheap (a directory listing and one small read per process); callers in the event loop may
run it in a thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from agent.errors import NotifyError

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    """One running process: its pid and its argv joined by single spaces (what patterns are matched on)."""

    pid: int
    command_line: str


def command_line(pid: int, proc: Path = PROC) -> str | None:
    """The space-joined argv of ``pid``; None for kernel threads, zombies and processes that are gone."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    if not raw:  # kernel threads and zombies have an empty cmdline
        return None
    # argv entries are NUL-terminated; undecodable bytes must not make a process unmatchable.
    return " ".join(raw.rstrip(b"\0").decode("utf-8", "surrogateescape").split("\0"))


def processes(proc: Path = PROC) -> list[ProcessInfo]:
    """Every process visible in ``proc`` that has a command line, in pid order."""
    found: list[ProcessInfo] = []
    try:
        entries = os.listdir(proc)
    except OSError as error:
        raise NotifyError(f"cannot list processes in {proc}: {error.strerror}") from None
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        line = command_line(pid, proc)
        if line is not None:
            found.append(ProcessInfo(pid, line))
    found.sort(key=lambda p: p.pid)
    return found


def matching_pids(
    pattern: re.Pattern[str], *, proc: Path = PROC, exclude: frozenset[int] | None = None
) -> list[int]:
    """Pids whose command line ``pattern.search()`` matches, except ``exclude`` (default: our own pid).

    We never match ourselves: the agent's own command line usually contains the pattern (it was given as a
    flag). Our parent is allowed on purpose: in a pod the agent is never the app's child, and in tests and
    on laptops the app is often the process that started the agent. PID 1 is matched like any other process,
    i.e. only when the pattern matches its command line.
    """
    skip = frozenset({os.getpid()}) if exclude is None else exclude
    return [p.pid for p in processes(proc) if p.pid not in skip and pattern.search(p.command_line)]


def read_pid_file(path: Path) -> int:
    """The pid written in ``path`` (surrounding whitespace allowed); NotifyError when absent or invalid."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise NotifyError(f"pid file {path} does not exist") from None
    except OSError as error:
        raise NotifyError(f"cannot read pid file {path}: {error.strerror}") from None
    if not text.isdigit() or int(text) <= 0:
        # 0 and negative numbers would make kill() signal a whole process group or every process we may
        # signal: never let a corrupt pid file do that.
        # The content is not echoed: whatever sits in a mistyped path is none of the log's business.
        raise NotifyError(f"pid file {path} does not hold a positive process id")
    return int(text)
