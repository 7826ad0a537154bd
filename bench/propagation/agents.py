"""The measured actors: each agent (``python -m agent run``) with its app, and what the bench sees of them.

An agent here is two real processes, the app (``testing/apps/reloading_app.py``, which re-reads its file on
SIGHUP and logs what it read) and the agent that signals it by ``--pid-file``; ``Observed`` collects, from
the inotify thread, the (time, rotation) of every swap of the agent's ``..data`` and every signalled read
of its app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.propagation.inotify import IN_MODIFY, IN_MOVED_TO, Inotify
from bench.propagation.world import FILE, STARTUP_TIMEOUT, agent_config, index_of
from testing.apps import app_argv
from testing.emulator_process import EmulatorProcess, stop_process


@dataclass
class Observed:
    """One agent and its app: (time, rotation index) of each swap and of each signalled read."""

    title: str
    output_dir: Path
    app_log: Path
    swaps: list[tuple[float, int]] = field(default_factory=list)
    reads: list[tuple[float, int]] = field(default_factory=list)
    _log_offset: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_output_event(self, _key: str, name: str, when: float) -> None:
        if name != "..data":
            return
        for _ in range(3):  # a newer snapshot may have replaced the one the link pointed at: read again
            try:
                target = os.readlink(self.output_dir / "..data")
                text = (self.output_dir / target / FILE).read_text()
            except FileNotFoundError:
                continue
            index = index_of(text)
            if index is not None:
                with self._lock:
                    self.swaps.append((when, index))
            return

    def on_log_event(self, _key: str, _name: str, when: float) -> None:
        with self.app_log.open("rb") as log:
            log.seek(self._log_offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        for line in complete.splitlines():
            record = json.loads(line)
            if record.get("event") == "read" and record.get("signal") is not None:
                index = index_of(record["values"].get(FILE))
                if index is not None:
                    with self._lock:
                        self.reads.append((when, index))

    def first_at_least(self, index: int, kind: str) -> float | None:
        """When this agent first swapped in (or its app first read) rotation ``index`` or a later one."""
        with self._lock:
            records = list(self.swaps if kind == "swap" else self.reads)
        times = [when for when, seen in records if seen >= index]
        return min(times) if times else None

    def has_read(self, index: int) -> bool:
        return self.first_at_least(index, "read") is not None


@contextmanager
def child(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield process
    finally:
        stop_process(process, grace=15)


def wait_for_text(log: Path, process: subprocess.Popen[bytes], text: str, within: float) -> None:
    deadline = time.monotonic() + within
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"{log.name}: exited with {process.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: no {text!r} within {within:.0f} s: {log.read_text()[-2000:]}")
        time.sleep(0.05)


@dataclass
class Agent:
    observed: Observed
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def started_agent(
    title: str,
    work: Path,
    ep: EmulatorProcess,
    watcher: Inotify,
    env: dict[str, str],
    *,
    events: bool = False,
    max_delay: float | None = None,
) -> Iterator[Agent]:
    """An app (reloading_app.py, writing its pid file) and ``python -m agent run`` next to it."""
    base = work / title.replace(" ", "-").replace(",", "")
    output_dir, app_log, pid_file = base / "secrets", base / "app.log", base / "app.pid"
    output_dir.mkdir(parents=True)
    app_log.touch()
    observed = Observed(title, output_dir, app_log)
    watcher.watch(f"{title}:out", output_dir, IN_MOVED_TO, observed.on_output_event)
    watcher.watch(f"{title}:log", app_log, IN_MODIFY, observed.on_log_event)
    app = app_argv(app_log, directory=output_dir, files=[FILE], snapshot=True, pid_file=pid_file)
    with ExitStack() as stack:
        stack.enter_context(child(app, base / "app.out"))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not pid_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{title}: the app wrote no pid file")
            time.sleep(0.02)
        config = agent_config(
            base / "agent.yaml", ep, output_dir, pid_file, events=events, max_delay=max_delay
        )
        argv = [sys.executable, "-m", "agent", "run", "--config", str(config)]
        log = base / "agent.log"
        process = stack.enter_context(child(argv, log, env))
        yield Agent(observed, process, log)
