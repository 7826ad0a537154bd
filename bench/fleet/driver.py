"""The driver's side of the workers: start the worker processes, collect what they report, tell them what
to do, stop them.

``FleetState`` is the one record of what every agent reported (boots, event health, events, the first
moment each version was served), filled by one reader thread per worker; the scenarios wait on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet.world import SECRETS, WORKERS
from testing.emulator_process import EmulatorProcess


@dataclass
class FleetState:
    """What the workers reported, by agent: boot time, event health, first time each version was served."""

    boots: dict[int, float] = field(default_factory=dict)
    healthy: dict[int, bool] = field(default_factory=dict)
    events: dict[int, list[float]] = field(default_factory=dict)
    """When each agent's loop got an event that asked for a fetch."""
    versions: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)
    starts: dict[int, list[float]] = field(default_factory=dict)
    """Restart mode: when each attempt of each pod's init container started."""
    init_failures: list[tuple[int, float, int, list[str]]] = field(default_factory=list)
    """Restart mode: (agent, when, secrets that failed, their statuses) per init container that exited
    non-zero."""
    listings: list[tuple[int, float, str]] = field(default_factory=list)
    """Selections: (agent, when, status) of every listing call an agent's discovery made."""
    stopped: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, record: dict[str, Any]) -> None:
        with self.lock:
            if "stopped" in record:  # a worker process's last record, for all of its agents
                self.stopped += record["stopped"]
                self.errors.extend(record["errors"])
                return
            agent: int = record["a"]  # every other record is one agent's
            if "v" in record:
                served = self.versions.setdefault(agent, {})
                for name, version in record["v"].items():
                    served.setdefault(name, {}).setdefault(int(version), record["t"])
            if "boot" in record:
                self.boots[agent] = record["boot"]
                if record["failed"]:
                    self.errors.append(f"agent {agent}: bootstrap failed for {record['failed']}")
            if "e" in record:
                self.events.setdefault(agent, []).append(record["e"])
            if "start" in record:
                self.starts.setdefault(agent, []).append(record["start"])
            if "init_failed" in record:
                self.init_failures.append((agent, record["init_failed"], record["secrets"], record["codes"]))
            if "l" in record:
                self.listings.append((agent, record["l"], record["c"]))
            if "healthy" in record:
                self.healthy[agent] = record["healthy"]

    def count(self, predicate: Callable[[FleetState], int]) -> int:
        with self.lock:
            return predicate(self)

    def served_at(self, agents: int, name: str, version: int) -> list[float] | None:
        """When each of ``agents`` agents first served ``version`` (or a later one) of ``name``; None while
        one has not yet."""
        with self.lock:
            if len(self.versions) < agents:
                return None
            firsts = []
            for served in self.versions.values():
                times = [t for v, t in served.get(name, {}).items() if v >= version]
                if not times:
                    return None
                firsts.append(min(times))
            return firsts

    def holding(self, agents: int, names: Sequence[str]) -> list[float] | None:
        """When each of ``agents`` agents first held every one of ``names`` (any version); None while one
        does not yet."""
        with self.lock:
            if len(self.versions) < agents:
                return None
            held = []
            for served in self.versions.values():
                if any(name not in served for name in names):
                    return None
                held.append(max(min(served[name].values()) for name in names))
            return held

    def events_after(self, moment: float) -> list[float]:
        """Per agent that got one: when its first fetch-asking event after ``moment`` reached it."""
        with self.lock:
            return [min(t for t in ts if t >= moment) for ts in self.events.values() if max(ts) >= moment]


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    thread: threading.Thread


def _read_worker(process: subprocess.Popen[bytes], state: FleetState) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(b"{"):
            state.take(json.loads(line))


@contextmanager
def fleet_workers(
    state: FleetState,
    ep: EmulatorProcess,
    work: Path,
    agents: int,
    *,
    poll_interval: float,
    spread: float,
    events: bool,
    env: dict[str, str],
    secrets: int = SECRETS,
    concurrency: int | None = None,
    restart: bool = False,
    config_dir: Path | None = None,
    flags: dict[str, object] | None = None,
) -> Iterator[list[Worker]]:
    """Start ``WORKERS`` worker processes sharing ``agents`` agents; stop them (graceful) afterwards.

    ``concurrency``: the agents' ``--concurrency`` (None: its default); ``restart``: init containers
    through a fleet restart (``worker.restart_pod``) instead of sidecars; ``config_dir``: each agent's
    configuration file (``agent-NNNN.yaml``, what admission injected); ``flags``: settings layered over it
    (config path -> value)."""
    workers: list[Worker] = []
    per = -(-agents // WORKERS)
    work.mkdir(parents=True, exist_ok=True)
    try:
        for first in range(0, agents, per):
            argv = [sys.executable, "-m", "bench.fleet", "worker", "--target", ep.grpc_target]
            argv += ["--first", str(first), "--count", str(min(per, agents - first))]
            argv += ["--work", str(work), "--poll-interval", f"{poll_interval:g}", "--spread", f"{spread:g}"]
            argv += ["--secrets", str(secrets)] + (["--events"] if events else [])
            argv += ["--concurrency", str(concurrency)] if concurrency is not None else []
            argv += ["--restart"] if restart else []
            argv += ["--config-dir", str(config_dir)] if config_dir is not None else []
            argv += ["--flags", json.dumps(flags or {})]
            with (work / f"worker-{first}.log").open("ab") as err:
                process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env
                )
            thread = threading.Thread(target=_read_worker, args=(process, state), daemon=True)
            thread.start()
            workers.append(Worker(process, thread))
        yield workers
    except BaseException:
        for log in sorted(work.glob("worker-*.log")):  # what the workers said is what debugging needs first
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {log.name}, last lines", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        for worker in workers:
            with suppress(OSError):  # a worker that died has no stdin left
                assert worker.process.stdin is not None
                worker.process.stdin.write(b"stop\n")
                worker.process.stdin.close()
        for worker in workers:
            try:
                worker.process.wait(60)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.thread.join(5)
        if state.errors or (workers and state.stopped != agents):
            # Not fatal to the figures already taken, but nobody should read them without knowing.
            print(
                f"warning: {agents - state.stopped} agent(s) did not stop cleanly; {state.errors[:3]}",
                file=sys.stderr,
            )


def tell(workers: Sequence[Worker], line: str) -> None:
    for worker in workers:
        assert worker.process.stdin is not None
        worker.process.stdin.write(line.encode() + b"\n")
        worker.process.stdin.flush()


def wait_until(condition: Callable[[], bool], within: float, what: str, state: FleetState) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}; worker errors: {state.errors[:3]}")
        time.sleep(0.01)
