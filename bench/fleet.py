"""A fleet of agents against one Secret Manager with quotas on: polling every 2 minutes, hourly, events.

**The fleet.** ``AGENTS`` agents (``Syncer`` + ``GcpSource`` + ``SnapshotSink`` on ``/dev/shm``, built by
``agent.app``'s own builders from a ``load_config`` Config, as ``run`` builds them), ``SECRETS`` secrets each
(the same ones for every pod: one deployment, one project), split over ``WORKERS`` worker processes
(``python -m bench.fleet worker``) so that both cores work. In event mode every agent has its own
``EventFeed``: its own Pub/Sub subscription (created at start, deleted at the end) on the topic the secrets
publish to, wired as ``agent.app`` wires it (``Syncer.follow`` with ``events.max_delay``; while events flow
the poll loop runs at ``events.poll_interval``, the safety net). One emulator process serves them all,
publishing to the official Pub/Sub emulator; its admin counters (sampled every few tens of ms) are the
record of every call and every RESOURCE_EXHAUSTED. ``BENCH_FLEET_AGENTS`` sets another fleet size.

**Scale.** The simulated fleet stands for ``REPRESENTED_PODS`` pods, so the access quota is scaled by
``AGENTS / REPRESENTED_PODS`` (90,000/min -> 1,800/min for 200 agents). The read and write quotas are not
per pod (the agent reads nothing; writes are the rotations) and stay at the service's 600/min.

**Time.** Polling every 2 minutes and every hour is compressed so that one interval lasts
``WALL_INTERVAL`` s of wall time (10 s: x12 and x360; 5 s with ``--quick``); each quota is multiplied by the
compression too (the emulator's quota window is 60 s of wall time, i.e. that many compressed minutes, so
bursts inside it are judged more leniently: the peak per compressed minute is reported separately and
compared with the quota). The checks' own duration does not shrink with the interval, so compressed
intervals come out ~1% longer than configured and the per-pod-hour rates ~1% lower than at real
intervals. Event mode runs in real time (Pub/Sub delivery, ``max_delay`` and fetches are what is
measured), except its last phase, where the safety poll is compressed like hourly polling to measure it.

**Phases.** Polling: the agents start at random moments over one interval (pods started at different
times), then, after ``SETTLE_INTERVALS``, a steady window of ``WINDOW_INTERVALS`` intervals with one
rotation in it (convergence = until every agent's snapshot, i.e. its files, holds the new version).
Events: start (each agent bootstraps, creates its subscription and catches up), then quotas on, an idle
window (no rotation: every access call counts against "at most one per secret per pod-hour"),
``EVENT_ROTATIONS`` rotations of one secret each (convergence, calls per rotation, quota errors), then the
safety poll compressed (each agent switches at a random moment within one compressed interval; the steady
window follows).

**The host is part of the measurement.** Every agent's CPU, both emulators and the Pub/Sub fan-out share
this machine's cores: the event table prints how many were busy during each rotation. At 300 agents on 2
cores both stayed busy through each rotation (1.97 of 2) and convergence took 2.5-3.8 s, most of it waiting
for CPU; at 100 agents (1.1-1.3 cores busy) 1.0-1.2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from bench.propagation import pubsub_topic
from testing.emulator_process import EmulatorProcess, emulator_process, patched_environ
from testing.emulator_process import write_seed as emulator_seed

PROJECT = "bench-project"
TOPIC = f"projects/{PROJECT}/topics/secret-events"
AGENTS, QUICK_AGENTS = 200, 100
"""Agents in the fleet (``BENCH_FLEET_AGENTS`` overrides). 200 rather than more: see "the host" above."""
SECRETS = 10
WORKERS = 3
REPRESENTED_PODS = 10_000
SERVICE_ACCESS_PER_MINUTE = 90_000
SERVICE_READ_WRITE_PER_MINUTE = 600
WALL_INTERVAL, QUICK_WALL_INTERVAL = 10.0, 5.0
"""Seconds of wall time one compressed poll interval lasts."""
WINDOW_INTERVALS = 2.0
"""Length of a steady window, in poll intervals."""
SETTLE_INTERVALS = 0.5
"""The steady window opens this many intervals after the last agent started (or switched interval): each
agent's first poll comes one whole interval after its start, so the polls only spread evenly (the fleet's
steady state) after a while. Without this, 1.5-interval windows counted ~5% too few calls."""
EVENT_ROTATIONS, QUICK_EVENT_ROTATIONS = 5, 3
IDLE_WINDOW, QUICK_IDLE_WINDOW = 10.0, 5.0
"""Seconds of real time with events on and nothing rotated."""
EVENT_START_SPREAD = 5.0
"""The event-mode agents start at random moments over this many seconds."""
SAFETY_POLL = 3600.0
CONVERGENCE_TARGET = 2.0
PER_POD_HOUR_TARGET = 1.0
SAMPLE_PERIOD_MIN = 0.02
STARTUP_TIMEOUT = 120.0
ACCESS = "AccessSecretVersion"

log = logging.getLogger(__name__)


def secret_id(index: int) -> str:
    return f"fleet-{index:02d}"


def scaled_access_quota(agents: int) -> int:
    """The service's access quota for the share of ``REPRESENTED_PODS`` that ``agents`` stand for."""
    return round(SERVICE_ACCESS_PER_MINUTE * agents / REPRESENTED_PODS)


# --------------------------------------------------------------------------------------------------
# The worker: a slice of the fleet in one process
# --------------------------------------------------------------------------------------------------


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class FleetAgent:
    """One pod's agent: the same parts ``secrets-agent run`` builds, without its processes and listeners."""

    def __init__(self, ident: int, config: Any, safety: float) -> None:
        from agent.app import build_sink, select_source, sync_settings
        from agent.core.store import SnapshotStore
        from agent.sync import Syncer

        self.ident = ident
        self.config = config
        self.safety = safety
        self.source = select_source(config, "run")
        self.store = SnapshotStore(config.secrets)
        self.syncer = Syncer(
            config.secrets,
            self.source,
            build_sink(config),
            self.store,
            sync_settings(config),
            on_change=[self._changed],
            rng=random.Random(ident),
        )
        self._emitted: dict[str, str] = {}

    def _changed(self, snapshot: Any) -> None:
        versions = {item.name: item.version for item in snapshot}
        moved = {name: v for name, v in versions.items() if self._emitted.get(name) != v}
        if moved:
            self._emitted.update(moved)
            emit({"a": self.ident, "v": moved, "t": time.monotonic()})

    async def run(self, start_delay: float) -> None:
        await asyncio.sleep(start_delay)
        report = await self.syncer.bootstrap(deadline=time.monotonic() + self.config.timeout)
        self._changed(report.snapshot)
        emit({"a": self.ident, "boot": time.monotonic(), "failed": sorted(report.failures)})
        parts = [self.syncer.poll()]
        if self.config.events.enabled:
            parts.append(self._follow_events())
        await asyncio.gather(*parts)

    async def _follow_events(self) -> None:
        """As ``agent.app`` wires ``events``: the feed, health -> poll interval, follow with max_delay."""
        from agent.core.retry import Backoff
        from agent.sources.event_feed import EventFeed

        events = self.config.events

        def served(name: str) -> str | None:
            current = self.store.snapshot.get(name)
            return current.version if current is not None else None

        def health(flowing: bool) -> None:
            self.syncer.set_poll_interval(self.safety if flowing else self.config.poll_interval)
            emit({"a": self.ident, "healthy": flowing, "t": time.monotonic()})

        feed = EventFeed(
            events,
            self.config.secrets,
            served,
            resolved=getattr(self.source, "resolved_secret_names", None),
            on_health=health,
            on_event=self._event,
            backoff=Backoff(self.config.gcp.backoff_initial, self.config.gcp.backoff_max),
            hostname=f"fleet-{self.ident}",
        )
        try:
            await self.syncer.follow(feed, max_delay=events.max_delay)
        finally:
            await feed.close()

    def _event(self, kind: str, action: str) -> None:
        if action == "fetch":  # the moment an event that asks for a fetch reached this agent's loop
            emit({"a": self.ident, "e": time.monotonic()})

    def compress_safety_poll(self, seconds: float) -> None:
        """From now on the safety poll runs every ``seconds`` (the wait in progress is re-planned)."""
        self.safety = seconds
        self.syncer.set_poll_interval(seconds)


def worker_config(args: argparse.Namespace, ident: int) -> Any:
    from agent.config import load_config

    flags: dict[str, object] = {
        "gcp.endpoint": args.target,
        "project": PROJECT,
        "output_dir": str(Path(args.work) / f"agent-{ident:04d}"),
        "poll_interval": f"{args.poll_interval}s",
        "secrets": [f"{secret_id(i)}={secret_id(i)}" for i in range(args.secrets)],
    }
    if args.events:
        flags["events.topic"] = TOPIC
        flags["events.poll_interval"] = f"{SAFETY_POLL:g}s"
    return load_config(None, {}, flags)


async def run_worker(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.first)
    agents = [
        FleetAgent(ident, worker_config(args, ident), SAFETY_POLL)
        for ident in range(args.first, args.first + args.count)
    ]
    tasks = [asyncio.create_task(a.run(rng.uniform(0, args.spread))) for a in agents]
    stop = asyncio.Event()

    def command(line: str) -> None:
        words = line.split()
        if not words or words[0] == "stop":
            stop.set()
        elif words[0] == "safety":
            seconds = float(words[1])
            for agent in agents:  # each pod switches at its own moment, so phases stay spread out
                loop.call_later(rng.uniform(0, seconds), agent.compress_safety_poll, seconds)

    def read_commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_commands, daemon=True).start()
    await stop.wait()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [
        repr(o)
        for o in outcomes
        if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)
    ]
    for agent in agents:
        await agent.source.close()
    emit({"stopped": len(agents), "errors": errors[:3]})


# --------------------------------------------------------------------------------------------------
# The driver: workers, counters, rotations
# --------------------------------------------------------------------------------------------------


@dataclass
class FleetState:
    """What the workers reported, by agent: boot time, event health, first time each version was served."""

    boots: dict[int, float] = field(default_factory=dict)
    healthy: dict[int, bool] = field(default_factory=dict)
    events: dict[int, list[float]] = field(default_factory=dict)
    """When each agent's loop got an event that asked for a fetch."""
    versions: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)
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
) -> Iterator[list[Worker]]:
    """Start ``WORKERS`` worker processes sharing ``agents`` agents; stop them (graceful) afterwards."""
    workers: list[Worker] = []
    per = -(-agents // WORKERS)
    work.mkdir(parents=True, exist_ok=True)
    try:
        for first in range(0, agents, per):
            argv = [sys.executable, "-m", "bench.fleet", "worker", "--target", ep.grpc_target]
            argv += ["--first", str(first), "--count", str(min(per, agents - first))]
            argv += ["--work", str(work), "--poll-interval", f"{poll_interval:g}", "--spread", f"{spread:g}"]
            argv += ["--secrets", str(SECRETS)] + (["--events"] if events else [])
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


class Counters:
    """The emulator's AccessSecretVersion counts, sampled in a thread: (time, calls, RESOURCE_EXHAUSTED)."""

    def __init__(self, ep: EmulatorProcess, period: float) -> None:
        self.url = f"{ep.admin_url}/counters"
        self.period = period
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> tuple[float, int, int]:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            counters = json.load(response)
        by_code = counters["methods"].get(ACCESS, {})
        return time.monotonic(), int(sum(by_code.values())), int(by_code.get("RESOURCE_EXHAUSTED", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(self.period)

    def __enter__(self) -> Counters:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, start: float, end: float) -> list[tuple[float, int, int]]:
        return [s for s in list(self.samples) if start <= s[0] <= end]

    def peak(self, start: float, end: float, window: float) -> int:
        """Most calls within any ``window`` seconds between ``start`` and ``end`` (sample resolution)."""
        samples = self.between(start, end)
        best, j = 0, 0
        for i, (t, total, _) in enumerate(samples):
            j = max(j, i)
            while j + 1 < len(samples) and samples[j + 1][0] <= t + window:
                j += 1
            best = max(best, samples[j][1] - total)
        return best


def set_quotas(ep: EmulatorProcess, access_per_minute: int) -> None:
    ep.admin(
        "PUT",
        "/faults",
        {
            "quotas": {
                "access_per_minute": access_per_minute,
                "read_per_minute": SERVICE_READ_WRITE_PER_MINUTE,
                "write_per_minute": SERVICE_READ_WRITE_PER_MINUTE,
            }
        },
    )


def wait_until(condition: Callable[[], bool], within: float, what: str, state: FleetState) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}; worker errors: {state.errors[:3]}")
        time.sleep(0.01)


class Rotator:
    """AddSecretVersion through the official client; returns the new version number and when it started."""

    def __init__(self, ep: EmulatorProcess) -> None:
        self.client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(ep.grpc_target))
        )
        self.count = 0

    def rotate(self, name: str) -> tuple[int, float]:
        self.count += 1
        started = time.monotonic()
        version = self.client.add_secret_version(
            parent=f"projects/{PROJECT}/secrets/{name}",
            payload=secretmanager_v1.SecretPayload(data=f"rotated-{self.count}".encode()),
        )
        return int(version.name.rsplit("/", 1)[-1]), started

    def close(self) -> None:
        self.client.transport.close()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Rotation:
    """One rotation as the fleet saw it: seconds from just before AddSecretVersion, per agent."""

    served: list[float]
    """Until each agent served the new version (its files swapped)."""
    delivered: list[float]
    """Until the event reached each agent (event mode; empty when polling)."""
    busy_cores: float
    """CPU cores of this machine busy on average from the rotation until the last agent served it: the
    fleet, both emulators and the bench itself share them."""

    @property
    def convergence(self) -> float:
        return max(self.served)


def machine_busy_seconds() -> float:
    """CPU seconds spent so far by every core of this machine, idle and iowait excluded (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def converge(state: FleetState, agents: int, rotator: Rotator, name: str, within: float) -> Rotation:
    """Rotate ``name``; wait until every agent serves the new version."""
    busy_before = machine_busy_seconds()
    version, started = rotator.rotate(name)
    wait_until(lambda: state.served_at(agents, name, version) is not None, within, f"{name}@{version}", state)
    busy = (machine_busy_seconds() - busy_before) / (time.monotonic() - started)
    served = state.served_at(agents, name, version)
    assert served is not None
    return Rotation([t - started for t in served], [t - started for t in state.events_after(started)], busy)


# --------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One fleet mode's figures; seconds and minutes are modelled (wall time x compression)."""

    title: str
    interval: float
    """Seconds between polls (for events: the safety poll) that the scenario models."""
    compression: float
    agents: int
    per_secret_pod_hour: float
    """Access calls per secret per pod-hour in the steady window."""
    steady_calls: int
    steady_wall: float
    rotations: list[Rotation]
    rotation_compression: float
    """Compression of the time the rotations took (1: real time, as with events)."""
    peak_per_minute: int
    """Most access calls in one (modelled) minute, steady window and rotations."""
    quota_per_minute: int
    """The (scaled) access quota per modelled minute."""
    quota_errors: int

    @property
    def convergence(self) -> list[float]:
        """Modelled seconds from AddSecretVersion until every agent served the new version, per rotation."""
        return [r.convergence * self.rotation_compression for r in self.rotations]

    startup_calls_per_secret: float | None = None
    idle_calls: int | None = None
    idle_wall: float | None = None
    calls_per_rotation: float | None = None
    """Access calls per rotation of one secret, per pod (events)."""


def polling_scenario(
    ep: EmulatorProcess,
    work: Path,
    agents: int,
    interval: float,
    title: str,
    env: dict[str, str],
    wall: float,
) -> Scenario:
    """``interval`` (seconds) compressed to ``wall`` seconds of wall time."""
    compression = interval / wall
    quota = scaled_access_quota(agents)
    ep.admin("POST", "/counters:reset")
    set_quotas(ep, round(quota * compression))
    state = FleetState()
    rotator = Rotator(ep)
    period = max(SAMPLE_PERIOD_MIN, 60 / compression / 8)
    with (
        Counters(ep, period) as counters,
        fleet_workers(
            state,
            ep,
            work / title.replace(" ", "-"),
            agents,
            poll_interval=wall,
            spread=wall,
            events=False,
            env=env,
        ),
    ):
        wait_until(lambda: state.count(lambda s: len(s.boots)) == agents, STARTUP_TIMEOUT, "boots", state)
        time.sleep(SETTLE_INTERVALS * wall)  # the measurement's own window, see SETTLE_INTERVALS
        window_start, start_calls, _ = counters.read()
        time.sleep(0.2 * wall)  # the rotation lands at an arbitrary point of every agent's cycle
        took = converge(state, agents, rotator, secret_id(0), wall * 1.2 + 10)
        window_end = window_start + WINDOW_INTERVALS * wall
        time.sleep(max(0.0, window_end - time.monotonic()))
        end_time, end_calls, exhausted = counters.read()
        steady = end_calls - start_calls
        wall = end_time - window_start
        peak = counters.peak(window_start, end_time, 60 / compression)
    rotator.close()
    return Scenario(
        title=title,
        interval=interval,
        compression=compression,
        agents=agents,
        per_secret_pod_hour=steady / (agents * SECRETS * wall * compression / 3600),
        steady_calls=steady,
        steady_wall=wall,
        rotations=[took],
        rotation_compression=compression,
        peak_per_minute=peak,
        quota_per_minute=quota,
        quota_errors=exhausted,
    )


def events_scenario(
    ep: EmulatorProcess, work: Path, agents: int, quick: bool, env: dict[str, str]
) -> Scenario:
    quota = scaled_access_quota(agents)
    rotations = QUICK_EVENT_ROTATIONS if quick else EVENT_ROTATIONS
    idle = QUICK_IDLE_WINDOW if quick else IDLE_WINDOW
    wall = QUICK_WALL_INTERVAL if quick else WALL_INTERVAL
    compression = SAFETY_POLL / wall
    ep.admin("POST", "/counters:reset")
    ep.admin("PUT", "/faults", {"quotas": False})  # a fleet start is not what is measured here
    state = FleetState()
    rotator = Rotator(ep)
    with (
        Counters(ep, SAMPLE_PERIOD_MIN * 5) as counters,
        fleet_workers(
            state,
            ep,
            work / "events",
            agents,
            poll_interval=300,
            spread=EVENT_START_SPREAD,
            events=True,
            env=env,
        ) as workers,
    ):
        wait_until(
            lambda: state.count(lambda s: sum(s.healthy.values())) == agents,
            STARTUP_TIMEOUT,
            "every agent's subscription",
            state,
        )
        _quiet(counters)  # the catch-up checks after each subscription's creation are done
        _, startup, _ = counters.read()

        set_quotas(ep, quota)
        _, idle_start, _ = counters.read()
        time.sleep(idle)  # the measurement: a window in which nothing changes
        _, idle_end, _ = counters.read()

        phase_start, before, _ = counters.read()
        took = []
        for n in range(rotations):
            took.append(converge(state, agents, rotator, secret_id(n % SECRETS), 30.0))
            time.sleep(1.0)
        phase_end, after, _ = counters.read()
        peak = counters.peak(phase_start, phase_end, 60.0)

        set_quotas(ep, round(quota * compression))
        tell(workers, f"safety {wall:g}")
        time.sleep(wall * (1 + SETTLE_INTERVALS))  # every agent switched, and settled
        window_start, start_calls, _ = counters.read()
        time.sleep(WINDOW_INTERVALS * wall)
        window_end, end_calls, exhausted = counters.read()
    rotator.close()
    wall = window_end - window_start
    steady = end_calls - start_calls
    return Scenario(
        title=f"events + {SAFETY_POLL / 3600:g} h safety poll",
        interval=SAFETY_POLL,
        compression=compression,
        agents=agents,
        per_secret_pod_hour=steady / (agents * SECRETS * wall * compression / 3600),
        steady_calls=steady,
        steady_wall=wall,
        rotations=took,
        rotation_compression=1.0,
        peak_per_minute=peak,
        quota_per_minute=quota,
        quota_errors=exhausted,
        startup_calls_per_secret=startup / (agents * SECRETS),
        idle_calls=idle_end - idle_start,
        idle_wall=idle,
        calls_per_rotation=(after - before) / rotations / agents,
    )


def _quiet(counters: Counters, quiet: float = 1.5, within: float = 60.0) -> None:
    """Return once the access counter has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + within
    last, since = counters.read()[1], time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise RuntimeError("the fleet never went quiet after its start")
        time.sleep(0.1)
        now = counters.read()[1]
        if now != last:
            last, since = now, time.monotonic()


@dataclass(frozen=True)
class Result:
    agents: int
    scenarios: list[Scenario]
    events_note: str
    wall_interval: float
    """Seconds of wall time per compressed poll interval."""

    def find(self, prefix: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.title.startswith(prefix)), None)


def write_seed(path: Path) -> Path:
    secrets = {secret_id(i): {"value": "initial", "topics": [TOPIC]} for i in range(SECRETS)}
    return emulator_seed(path, PROJECT, secrets)


def fleet_size(quick: bool) -> int:
    override = os.environ.get("BENCH_FLEET_AGENTS")
    if override:
        return int(override)
    return QUICK_AGENTS if quick else AGENTS


def measure(quick: bool = False) -> Result:
    agents = fleet_size(quick)
    wall = QUICK_WALL_INTERVAL if quick else WALL_INTERVAL
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(prefix="bench-fleet-", dir=shm if shm.is_dir() else None) as tmp,
        pubsub_topic() as (pubsub_host, why_not),
        ExitStack() as stack,
    ):
        work = Path(tmp)
        env = dict(os.environ)
        if pubsub_host is not None:
            env["PUBSUB_EMULATOR_HOST"] = pubsub_host
            stack.enter_context(patched_environ({"PUBSUB_EMULATOR_HOST": pubsub_host}))
        ep = stack.enter_context(emulator_process(write_seed(work / "seed.yaml")))
        scenarios = [
            polling_scenario(ep, work, agents, 120.0, "poll every 2 min", env, wall),
            polling_scenario(ep, work, agents, 3600.0, "poll every 1 h", env, wall),
        ]
        if pubsub_host is not None:
            scenarios.append(events_scenario(ep, work, agents, quick, env))
        return Result(agents, scenarios, why_not, wall)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds * 1000:,.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    return f"{seconds:,.0f} s" if seconds < 600 else f"{seconds / 60:,.0f} min"


def print_tables(result: Result) -> None:
    n = result.agents
    print(
        f"\nFleet: {n} agents x {SECRETS} secrets ({WORKERS} processes), one emulator with quotas on, "
        f"scaled to {n}/{REPRESENTED_PODS:,} of the access quota ({scaled_access_quota(n):,}/min); polling "
        f"compressed to {result.wall_interval:g} s of wall time per interval (quotas x the same factor)"
    )
    print(
        "| mode | compression | convergence after a rotation (max over agents) | peak access calls / min "
        f"| scaled to {REPRESENTED_PODS:,} pods | quota errors | access calls / secret / pod-hour |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in result.scenarios:
        convergence = ", ".join(_duration(c) for c in s.convergence)
        scaled = s.peak_per_minute * REPRESENTED_PODS / n
        share = scaled / SERVICE_ACCESS_PER_MINUTE
        print(
            f"| {s.title} | x{s.compression:g} | {convergence} | {s.peak_per_minute:,} "
            f"(quota {s.quota_per_minute:,}) | {scaled:,.0f} ({share:.0%} of 90,000) | {s.quota_errors} "
            f"| {s.per_secret_pod_hour:.2f} ({s.steady_calls:,} calls in {s.steady_wall:.0f} s) |"
        )
    if result.find("events") is None:
        print(f"| events | - | not measured: {result.events_note} | | | | |")
    events = result.find("events")
    if events is not None:
        print(
            f"Events: start of each pod = {events.startup_calls_per_secret:.2f} access calls per secret "
            f"(bootstrap, then a catch-up check once its subscription exists); idle {events.idle_wall:.0f} s "
            f"with events flowing: {events.idle_calls} access calls; a rotation costs "
            f"{events.calls_per_rotation:.2f} access calls per pod; peak and quota errors are over the "
            f"rotations, in real minutes; the per-pod-hour figure is the safety poll, compressed x"
            f"{events.compression:g}."
        )
        print(
            f"\nEvent mode, each rotation across the {n} agents (real time, from just before "
            f"AddSecretVersion; after the event each agent waits a random [0, max_delay], fetches, swaps)"
        )
        print(
            "| rotation | event reached the agent p50 | its max | files swapped p50 | p99 "
            f"| max (convergence) | CPU cores busy (of {os.cpu_count()}) |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for number, r in enumerate(events.rotations, 1):
            delivered = sorted(r.delivered) or [float("nan")]
            served = sorted(r.served)
            print(
                f"| {number} | {_duration(_quantile(delivered, 0.5))} | {_duration(delivered[-1])} "
                f"| {_duration(_quantile(served, 0.5))} | {_duration(_quantile(served, 0.99))} "
                f"| {_duration(served[-1])} | {r.busy_cores:.2f} |"
            )


# --------------------------------------------------------------------------------------------------
# What it costs: calls per month, dollars, quota, from the measured rates
# --------------------------------------------------------------------------------------------------

HOURS_PER_MONTH = 730
COST_PODS = (1_000, 10_000)
ACCESS_PRICE_PER_10K = 0.03
"""Secret Manager: $0.03 per 10,000 access operations (cloud.google.com/secret-manager/pricing)."""
PUBSUB_PRICE_PER_TIB = 40.0
PUBSUB_FREE_BYTES = 10 * 2**30
PUBSUB_MIN_BILLED_BYTES = 1000
"""Pub/Sub (cloud.google.com/pubsub/pricing): throughput $40 per TiB after 10 GiB free per month, at least
1,000 bytes per publish or delivery request; what a subscription's filter drops is billed as delivered."""
ROTATIONS_PER_SECRET_MONTH = 30
"""Assumption: every secret rotated once a day."""
EVENTS_PER_ROTATION = 2
"""Assumption: SECRET_VERSION_ADD of the new version and SECRET_VERSION_DISABLE of the old one."""


def event_message_bytes() -> int:
    """Bytes Pub/Sub counts for one SECRET_VERSION_ADD message as the emulator builds it (the service's
    format): data, attribute keys and values, 20 for the timestamp, about 16 for the message id."""
    import datetime as dt

    from google.cloud.secretmanager_v1 import types

    from agent_emulator.events import build_event_message

    name = "projects/123456789012/secrets/payments-db-password"
    secret = types.Secret(name=name)
    version = types.SecretVersion(
        name=f"{name}/versions/42",
        state=types.SecretVersion.State.ENABLED,
        create_time=dt.datetime.now(dt.UTC),
        etag='"1700000000000000"',
        replication_status={"automatic": {}},
    )
    message = build_event_message("SECRET_VERSION_ADD", secret, version)
    return len(message.data) + sum(len(k) + len(v) for k, v in message.attributes.items()) + 20 + 16


@dataclass(frozen=True)
class CostRow:
    mode: str
    pods: int
    calls_per_month: float
    access_dollars: float
    pubsub_bytes: float
    pubsub_dollars: float
    """Beyond the free tier when this is the billing account's only Pub/Sub use."""
    pubsub_dollars_no_free_tier: float
    average_per_minute: float
    rotation_burst: float | None
    """Access calls one rotation of one secret causes across the fleet (within max_delay)."""
    restart_burst: float
    """Access calls when every pod restarts within one minute (a rollout): bootstrap (+ catch-up)."""
    reaches_every_pod: float
    """Measured (modelled) seconds until a rotation reached the last agent."""


def cost_rows(result: Result) -> list[CostRow]:
    rows: list[CostRow] = []
    message = max(PUBSUB_MIN_BILLED_BYTES, event_message_bytes())
    for scenario in result.scenarios:
        events = scenario.title.startswith("events")
        per_rotation = (scenario.calls_per_rotation or 0.0) if events else 0.0
        startup = scenario.startup_calls_per_secret or 1.0
        for pods in COST_PODS:
            polls = pods * SECRETS * scenario.per_secret_pod_hour * HOURS_PER_MONTH
            rotation_calls = pods * SECRETS * ROTATIONS_PER_SECRET_MONTH * per_rotation
            calls = polls + rotation_calls
            published = SECRETS * ROTATIONS_PER_SECRET_MONTH * EVENTS_PER_ROTATION if events else 0
            billed = (published + published * pods) * message  # each subscription gets every message
            rows.append(
                CostRow(
                    mode=scenario.title,
                    pods=pods,
                    calls_per_month=calls,
                    access_dollars=calls / 10_000 * ACCESS_PRICE_PER_10K,
                    pubsub_bytes=billed,
                    pubsub_dollars=max(0.0, billed - PUBSUB_FREE_BYTES) / 2**40 * PUBSUB_PRICE_PER_TIB,
                    pubsub_dollars_no_free_tier=billed / 2**40 * PUBSUB_PRICE_PER_TIB,
                    average_per_minute=pods * SECRETS * scenario.per_secret_pod_hour / 60,
                    rotation_burst=pods * per_rotation if events else None,
                    restart_burst=pods * SECRETS * startup,
                    reaches_every_pod=max(scenario.convergence),
                )
            )
    return rows


def _calls(value: float) -> str:
    flag = " **over quota**" if value > SERVICE_ACCESS_PER_MINUTE else ""
    return f"{value:,.0f} ({value / SERVICE_ACCESS_PER_MINUTE:.0%}){flag}"


def print_cost_table(result: Result) -> None:
    rows = cost_rows(result)
    message = event_message_bytes()
    print(
        f"\nPer month ({HOURS_PER_MONTH} h) with {SECRETS} secrets per pod, from the access rates measured "
        f"above; Secret Manager ${ACCESS_PRICE_PER_10K} per 10,000 accesses; Pub/Sub $40/TiB after 10 GiB "
        f"free, each message (~{message} bytes) billed as {PUBSUB_MIN_BILLED_BYTES:,} bytes per delivery; "
        f"every secret rotated {ROTATIONS_PER_SECRET_MONTH}x a month, {EVENTS_PER_ROTATION} events per "
        f"rotation; access quota {SERVICE_ACCESS_PER_MINUTE:,}/min per project"
    )
    print(
        "| mode | pods | a rotation reaches every pod in | access calls / month | Secret Manager / month "
        "| Pub/Sub / month | access calls / min, average (of quota) | one rotation, within max_delay "
        "| every pod restarted within a minute |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if row.pubsub_bytes:
            pubsub = (
                f"{row.pubsub_bytes / 1e9:,.2f} GB: ${row.pubsub_dollars:,.2f} "
                f"(${row.pubsub_dollars_no_free_tier:,.2f} without the free tier)"
            )
        else:
            pubsub = "-"
        burst = (
            _calls(row.rotation_burst) if row.rotation_burst is not None else "- (polls read latest anyway)"
        )
        print(
            f"| {row.mode} | {row.pods:,} | {_duration(row.reaches_every_pod)} | {row.calls_per_month:,.0f} "
            f"| ${row.access_dollars:,.2f} | {pubsub} | {_calls(row.average_per_minute)} | {burst} "
            f"| {_calls(row.restart_burst)} |"
        )
    for scenario in result.scenarios:
        pods = SERVICE_ACCESS_PER_MINUTE * 60 / (SECRETS * scenario.per_secret_pod_hour)
        print(
            f"{scenario.title}: the average alone reaches the access quota at {pods:,.0f} pods "
            f"of {SECRETS} secrets"
        )


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(quick: bool = False) -> Result:
    result = measure(quick)
    print_tables(result)
    print_cost_table(result)
    return result


def _cli(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="a slice of the fleet (used by the benchmark)")
    worker.add_argument("--target", required=True)
    worker.add_argument("--first", type=int, required=True)
    worker.add_argument("--count", type=int, required=True)
    worker.add_argument("--work", required=True)
    worker.add_argument("--poll-interval", type=float, required=True)
    worker.add_argument("--spread", type=float, default=0.0)
    worker.add_argument("--secrets", type=int, default=SECRETS)
    worker.add_argument("--events", action="store_true")
    sub.add_parser("run", help="the benchmark (default)").add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "worker":
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(run_worker(args))
    else:
        main(getattr(args, "quick", False))


if __name__ == "__main__":
    _cli(sys.argv[1:])
