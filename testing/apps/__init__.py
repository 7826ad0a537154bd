"""Small real programs that tests run as child processes, and helpers to drive and observe them.

``reloading_app.py`` is the app being reloaded: it reads its secret files on start and on SIGHUP and
records everything (start, reads, signals) as JSON lines in a log file; see its docstring for options.
``supervise.py`` runs ``WatchedChild`` as a process of its own (``exec --watch``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

APPS = Path(__file__).resolve().parent
RELOADING_APP = APPS / "reloading_app.py"
SUPERVISE = APPS / "supervise.py"

Record = dict[str, object]


def app_argv(
    log: Path,
    *,
    directory: Path | None = None,
    files: Sequence[str] = (),
    snapshot: bool = False,
    env: Sequence[str] = (),
    reload_signal: str | None = None,
    on_term: str | None = None,
    exit_with: int | None = None,
    pid_file: Path | None = None,
    orphan: Path | None = None,
) -> list[str]:
    """The command line that runs ``reloading_app.py`` with these options (``sys.executable``)."""
    argv = [sys.executable, str(RELOADING_APP), "--log", str(log)]
    if directory is not None:
        argv += ["--dir", str(directory)]
    for name in files:
        argv += ["--file", name]
    if snapshot:
        argv.append("--snapshot")
    for name in env:
        argv += ["--env", name]
    if reload_signal is not None:
        argv += ["--reload-signal", reload_signal]
    if on_term is not None:
        argv += ["--on-term", on_term]
    if exit_with is not None:
        argv += ["--exit-with", str(exit_with)]
    if pid_file is not None:
        argv += ["--pid-file", str(pid_file)]
    if orphan is not None:
        argv += ["--orphan", str(orphan)]
    return argv


def read_log(log: Path) -> list[Record]:
    """Every complete line of an app log (a missing log is empty)."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _matches(record: Record, criteria: dict[str, object]) -> bool:
    return all(record.get(key) == value for key, value in criteria.items())


def find_records(log: Path, **criteria: object) -> list[Record]:
    """The log's records whose fields equal ``criteria`` (e.g. ``event="signal", signal="SIGHUP"``)."""
    return [r for r in read_log(log) if _matches(r, criteria)]


def _describe(log: Path, criteria: dict[str, object], count: int) -> str:
    return f"no {count} record(s) matching {criteria} in {log}; log so far: {read_log(log)}"


async def wait_for_records(
    log: Path, count: int = 1, within: float = 20.0, **criteria: object
) -> list[Record]:
    """Wait (polling the file, up to ``within`` s) until ``count`` records match; returns them all."""
    deadline = time.monotonic() + within
    while True:
        found = find_records(log, **criteria)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(_describe(log, criteria, count))
        await asyncio.sleep(0.01)


def wait_for_records_sync(
    log: Path, count: int = 1, within: float = 20.0, **criteria: object
) -> list[Record]:
    """``wait_for_records`` for synchronous tests."""
    deadline = time.monotonic() + within
    while True:
        found = find_records(log, **criteria)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(_describe(log, criteria, count))
        time.sleep(0.01)


async def wait_until(condition: Callable[[], bool], within: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until true, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until_sync(condition: Callable[[], bool], within: float = 20.0, what: str = "condition") -> None:
    """``wait_until`` for synchronous tests."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def process_gone(pid: object) -> bool:
    """True when ``pid`` no longer exists at all (exited *and* reaped: not even a zombie)."""
    return not Path(f"/proc/{pid}").exists()
