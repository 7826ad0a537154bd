"""Rotation propagation: AddSecretVersion -> files swapped -> app signalled; Pub/Sub events, and polling.

One run, one Secret Manager emulator (a process of its own) publishing to the official Pub/Sub emulator, one
secret rotated ``ROTATIONS`` times through the official client. Watching it:

* the **events** agent: ``python -m agent run`` subscribed to the secret's topic (``events.topic``; the agent
  creates its own filtered subscription), poll interval one hour (the safety net only);
* ``POLLING_AGENTS`` **polling** agents: ``python -m agent run`` with a 60 s poll interval (+-10% jitter, the
  default), no events.

Every agent is a real process with its own output directory on ``/dev/shm`` and its own app: a real child
(``testing/apps/reloading_app.py``) that re-reads its file on SIGHUP and logs what it read; the agent finds it
by ``--pid-file``. ``notify.debounce`` is 0 for every agent (its default, 1 s, would add a second to every
signal: the debounce waits for quiet before it signals). The bench process watches, with inotify, each
output directory (the rename of ``..data``: files swapped) and each app's log (the line the app writes after
reading its file on SIGHUP: app signalled), and notes the ``CLOCK_MONOTONIC`` time of each; it reads which
rotation each swap and each read carried from the file itself. Latency of rotation *r* on an agent = first
swap (first signalled read) carrying *r* or a later rotation, minus the moment just before the
AddSecretVersion call of *r*.

**Why polling takes only about two minutes here.** 100 rotations x a 30 s mean wait, one after the other,
would take close to an hour. Instead the rotations are spread over one poll interval (stratified: one in
each ``60 s / ROTATIONS`` slot, each after the events agent signalled the previous one), and the polling
agents keep polling through them; a rotation made at a random moment of an agent's poll cycle waits the
rest of that cycle, which is what a rotation in a real pod waits. Rotations spread over a whole interval
cover every phase of each agent's cycle once, so the samples are the residual waits of the poll schedule;
the ``POLLING_AGENTS`` agents have independent phases (jitter). All ``ROTATIONS x POLLING_AGENTS`` samples
are pooled; samples of one agent are not independent (they share its poll times). The table also prints
the distribution the model predicts for uniform phase and +-10% jitter, next to the measurement.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from agent.config import Config
from testing.apps import app_argv
from testing.emulator_process import EmulatorProcess, emulator_process, patched_environ, stop_process
from testing.emulator_process import write_seed as emulator_seed

PROJECT = "bench-project"
SECRET_ID = "rotating"
FILE = "rot"
TOPIC = f"projects/{PROJECT}/topics/secret-events"
ROTATIONS, QUICK_ROTATIONS = 100, 30
POLLING_AGENTS = 8
"""Polling agents; ``--quick`` runs none (their measurement needs two poll intervals: over two minutes)
and prints only the model for them."""
QUICK_GAP = (0.05, 0.3)
"""Without polling agents the rotations follow each other after a random gap of this many seconds."""
POLL_INTERVAL = 60.0
POLL_JITTER = 0.1
"""The agent's default jitter (+-10%)."""
SAFETY_POLL = "1h"
EVENTS_TARGET = 1.0
"""Seconds: AddSecretVersion -> files swapped and app signalled, with events."""
SPAN = POLL_INTERVAL
"""The rotations are spread over one poll interval."""
STARTUP_TIMEOUT = 60.0
EVENT_TIMEOUT = 10.0
"""How long one rotation may take to reach the events agent's app before the run is called broken."""
_LAST_POLL_SLACK = 30.0

SECRET_NAME = f"projects/{PROJECT}/secrets/{SECRET_ID}"
EVENTS_DEFAULT = "events, default max_delay"
EVENTS_NO_DELAY = "events, max_delay 0"
EVENT_AGENTS = {EVENTS_DEFAULT: None, EVENTS_NO_DELAY: 0.0}
"""Title -> ``events.max_delay`` (None: the default). The default spreads a fleet's fetches over a random
delay; 0 is what a single pod, or a deployment small enough for the quota, can use."""


def value(index: int) -> str:
    return f"rotation-{index:04d}"


def index_of(text: str | None) -> int | None:
    if text is None or not text.startswith("rotation-"):
        return None
    try:
        return int(text.removeprefix("rotation-"))
    except ValueError:
        return None


def events_supported() -> bool:
    """Whether this agent has the ``events`` configuration section (Pub/Sub subscription)."""
    return any(f.name == "events" for f in dataclasses.fields(Config))


# --------------------------------------------------------------------------------------------------
# inotify: when exactly a file changed, without polling it
# --------------------------------------------------------------------------------------------------

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class Inotify:
    """A thread that notes the monotonic time of inotify events and hands them to ``on_event``.

    ``on_event(watch_key, name, when)`` runs in the thread; ``watch_key`` is what ``watch`` was given.
    """

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._keys: dict[int, str] = {}
        self._handlers: dict[str, Any] = {}
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)

    def watch(self, key: str, path: Path, mask: int, handler: Any) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
        self._keys[wd] = key
        self._handlers[key] = handler

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            when = time.monotonic()
            if self._stop_read in ready:
                return
            try:
                buffer = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(buffer):
                wd, _mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
                name = buffer[offset + _EVENT_HEADER.size : offset + _EVENT_HEADER.size + length]
                offset += _EVENT_HEADER.size + length
                key = self._keys.get(wd)
                if key is not None:
                    self._handlers[key](key, name.rstrip(b"\0").decode(), when)

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        for fd in (self._fd, self._stop_read, self._stop_write):
            os.close(fd)


# --------------------------------------------------------------------------------------------------
# What the bench sees of each agent
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------


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


def agent_config(
    path: Path,
    ep: EmulatorProcess,
    output_dir: Path,
    pid_file: Path,
    *,
    events: bool,
    max_delay: float | None,
) -> Path:
    config: dict[str, Any] = {
        "project": PROJECT,
        "output_dir": str(output_dir),
        "poll_interval": SAFETY_POLL if events else f"{POLL_INTERVAL:g}s",
        "poll_jitter": POLL_JITTER,
        "log_format": "text",
        "gcp": {"endpoint": ep.grpc_target},
        "notify": {"pid_file": str(pid_file), "debounce": 0},
        "server": {"listen": "127.0.0.1:0"},
        "probes": {"listen": "127.0.0.1:0"},
        "secrets": [{"name": FILE, "ref": SECRET_ID}],
    }
    if events:
        config["events"] = {"topic": TOPIC}
        if max_delay is not None:
            config["events"]["max_delay"] = max_delay
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


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
    watcher.watch(f"{title}:out", output_dir, _IN_MOVED_TO, observed.on_output_event)
    watcher.watch(f"{title}:log", app_log, _IN_MODIFY, observed.on_log_event)
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


# --------------------------------------------------------------------------------------------------
# The Pub/Sub side
# --------------------------------------------------------------------------------------------------


@contextmanager
def pubsub_topic() -> Iterator[tuple[str | None, str]]:
    """The Pub/Sub emulator with ``TOPIC`` created: (host:port, "") or (None, why not)."""
    from testing.pubsub_emulator import PubSubEmulatorUnavailable, start_pubsub_emulator

    if not events_supported():
        yield None, "this agent has no `events` configuration yet"
        return
    try:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    except ImportError:
        yield None, "google-cloud-pubsub is not installed (the pubsub extra)"
        return
    try:
        emulator = start_pubsub_emulator()
    except PubSubEmulatorUnavailable as error:
        yield None, f"no Pub/Sub emulator: {error}"
        return
    try:
        with patched_environ({"PUBSUB_EMULATOR_HOST": emulator.host_port}):
            publisher = pubsub_v1.PublisherClient()
            publisher.create_topic(request={"name": TOPIC})
            publisher.transport.close()
        yield emulator.host_port, ""
    finally:
        emulator.stop()


def write_seed(path: Path, with_topic: bool) -> Path:
    secret: dict[str, Any] = {"value": value(0)}
    if with_topic:
        secret["topics"] = [TOPIC]
    return emulator_seed(path, PROJECT, {SECRET_ID: secret})


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latencies:
    """Seconds per sample: files swapped, and app signalled (read the new file after SIGHUP)."""

    swapped: list[float]
    signalled: list[float]


@dataclass(frozen=True)
class Result:
    rotations: int
    polling_agents: int
    events: dict[str, Latencies]
    """By title (``EVENT_AGENTS``); empty when events could not be measured (``events_note`` says why)."""
    events_note: str
    polling: Latencies | None
    """None with ``--quick`` (no polling agents)."""
    add_call_ms: float
    """Median duration of the AddSecretVersion call itself."""
    default_max_delay: float | None
    """``events.max_delay``'s default, when the agent has one."""

    def events_p99(self, title: str = EVENTS_NO_DELAY) -> float | None:
        """p99 seconds to app signalled (which comes after the swap) for one events agent."""
        lat = self.events.get(title)
        return percentile(lat.signalled, 0.99) if lat is not None else None


def wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def rotate_all(
    client: secretmanager_v1.SecretManagerServiceClient,
    first: int,
    rotations: int,
    event_agents: Sequence[Observed],
    rng: random.Random,
    span: float,
) -> tuple[dict[int, float], list[float]]:
    """Add ``rotations`` versions, one per slot of ``span / rotations`` seconds at a random moment in it
    (never before every events agent's app has read the previous one, so that no rotation overtakes
    another there; with ``span`` 0, a short random gap after that). Returns {index: time just before the
    call} and the durations of the calls."""
    slot = span / rotations
    begin = time.monotonic() + 0.2
    started: dict[int, float] = {}
    durations: list[float] = []
    for n in range(rotations):
        index = first + n
        if n > 0:
            wait_until(
                lambda i=index: all(e.has_read(i - 1) for e in event_agents),
                EVENT_TIMEOUT,
                f"rotation {index - 1} at the events agents",
            )
        pause = (
            begin + n * slot + rng.uniform(0, slot) - time.monotonic() if slot else rng.uniform(*QUICK_GAP)
        )
        if pause > 0:
            time.sleep(pause)  # pacing the schedule, not synchronisation: what is awaited is checked above
        started[index] = time.monotonic()
        client.add_secret_version(
            parent=SECRET_NAME, payload=secretmanager_v1.SecretPayload(data=value(index).encode())
        )
        durations.append(time.monotonic() - started[index])
    return started, durations


def latencies(agents: Sequence[Observed], started: dict[int, float]) -> Latencies:
    swapped: list[float] = []
    signalled: list[float] = []
    for agent in agents:
        for index, t0 in started.items():
            swap, read = agent.first_at_least(index, "swap"), agent.first_at_least(index, "read")
            if swap is None or read is None:
                raise RuntimeError(f"{agent.title}: rotation {index} never arrived")
            swapped.append(swap - t0)
            signalled.append(read - t0)
    return Latencies(swapped, signalled)


def measure(quick: bool = False) -> Result:
    rotations = QUICK_ROTATIONS if quick else ROTATIONS
    polling_count = 0 if quick else POLLING_AGENTS
    rng = random.Random(5)
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(prefix="bench-propagation-", dir=shm if shm.is_dir() else None) as tmp,
        pubsub_topic() as (pubsub_host, why_not),
        ExitStack() as stack,
    ):
        work = Path(tmp)
        env = dict(os.environ)
        if pubsub_host is not None:
            env["PUBSUB_EMULATOR_HOST"] = pubsub_host
            stack.enter_context(
                patched_environ({"PUBSUB_EMULATOR_HOST": pubsub_host})
            )  # the emulator publishes
        ep = stack.enter_context(emulator_process(write_seed(work / "seed.yaml", pubsub_host is not None)))
        watcher = Inotify()
        stack.callback(watcher.close)
        agents: list[Agent] = []
        if pubsub_host is not None:
            for title, max_delay in EVENT_AGENTS.items():
                starting = started_agent(title, work, ep, watcher, env, events=True, max_delay=max_delay)
                agents.append(stack.enter_context(starting))
        for k in range(polling_count):
            agents.append(stack.enter_context(started_agent(f"polling-{k + 1}", work, ep, watcher, env)))
        watcher.start()
        for agent in agents:
            wait_for_text(agent.log, agent.process, "run: serving 1 of 1", STARTUP_TIMEOUT)
        channel = grpc.insecure_channel(ep.grpc_target)
        client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=channel)
        )
        stack.callback(client.transport.close)
        event_agents = [a.observed for a in agents if a.observed.title in EVENT_AGENTS]
        polling = [a.observed for a in agents if a.observed.title not in EVENT_AGENTS]
        try:
            first = 1
            if event_agents:
                # Warm-up, not counted: proves every subscription delivers before the clock starts.
                client.add_secret_version(
                    parent=SECRET_NAME, payload=secretmanager_v1.SecretPayload(data=value(1).encode())
                )
                wait_until(
                    lambda: all(e.has_read(1) for e in event_agents), STARTUP_TIMEOUT, "the warm-up rotation"
                )
                first = 2
            span = SPAN if polling else 0.0
            started, durations = rotate_all(client, first, rotations, event_agents, rng, span)
            last = max(started)
            wait_until(
                lambda: all(e.has_read(last) for e in event_agents), EVENT_TIMEOUT, "the last rotation"
            )
            wait_until(
                lambda: all(p.has_read(last) for p in polling),
                POLL_INTERVAL * (1 + POLL_JITTER) + _LAST_POLL_SLACK,
                "every polling agent's app to read the last rotation",
            )
        except RuntimeError:
            for agent in agents:  # what the agents said is the first thing anyone debugging needs
                tail = agent.log.read_text(errors="replace").splitlines()[-20:]
                print(f"--- {agent.observed.title}: last lines of its log", *tail, sep="\n", file=sys.stderr)
            raise
        return Result(
            rotations=rotations,
            polling_agents=polling_count,
            events={e.title: latencies([e], started) for e in event_agents},
            events_note=why_not,
            polling=latencies(polling, started) if polling else None,
            add_call_ms=sorted(durations)[len(durations) // 2] * 1000,
            default_max_delay=_events_max_delay(),
        )


def _events_max_delay() -> float | None:
    if not events_supported():
        return None
    factory = {f.name: f for f in dataclasses.fields(Config)}["events"].default_factory
    if factory is dataclasses.MISSING:
        return None
    delay = getattr(factory(), "max_delay", None)
    return float(delay) if delay is not None else None


# --------------------------------------------------------------------------------------------------
# The model for polling, and the tables
# --------------------------------------------------------------------------------------------------


def residual_wait_quantile(q: float, interval: float = POLL_INTERVAL, jitter: float = POLL_JITTER) -> float:
    """The ``q`` quantile of the wait from a uniformly random moment to the next poll, when intervals are
    uniform on [interval(1-j), interval(1+j)] (renewal theory: the residual life has density S(x)/E[X])."""
    low, high = interval * (1 - jitter), interval * (1 + jitter)
    mean = (low + high) / 2

    def cdf(x: float) -> float:
        if x <= low:
            return x / mean
        x = min(x, high)
        return (low + ((high - low) ** 2 - (high - x) ** 2) / (2 * (high - low))) / mean

    lo, hi = 0.0, high
    for _ in range(60):  # bisection: cdf is continuous and increasing on [0, high]
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def row(title: str, agents: str, samples: int, lat: Latencies) -> str:
    cells = [fmt(percentile(v, q)) for v in (lat.swapped, lat.signalled) for q in (0.5, 0.99)]
    cells.insert(2, fmt(max(lat.swapped)))
    cells.append(fmt(max(lat.signalled)))
    return f"| {title} | {agents} | {samples} | " + " | ".join(cells) + " |"


def print_table(result: Result) -> None:
    pacing = f"spread over {SPAN:.0f} s" if result.polling is not None else "one after the other"
    print(
        f"\nPropagation of a rotation: AddSecretVersion (official client) -> `..data` swapped -> app "
        f"signalled (SIGHUP, file re-read); {result.rotations} rotations {pacing}; every agent a `run` "
        f"process with notify.debounce 0; inotify timestamps"
    )
    print(
        "| mode | agents | samples | swapped p50 | swapped p99 | swapped max | signalled p50 "
        "| signalled p99 | signalled max |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, lat in result.events.items():
        delay = EVENT_AGENTS[title]
        spelled = f"{result.default_max_delay:g} s, the default" if delay is None else f"{delay:g} s"
        label = f"Pub/Sub events, max_delay {spelled}, {SAFETY_POLL} safety poll"
        print(row(label, "1", result.rotations, lat))
    if not result.events:
        print(f"| Pub/Sub events | - | 0 | not measured: {result.events_note} | | | | | |")
    if result.polling is not None:
        samples = result.rotations * result.polling_agents
        title = f"polling every {POLL_INTERVAL:.0f} s (measured)"
        print(row(title, str(result.polling_agents), samples, result.polling))
    else:
        print(f"| polling every {POLL_INTERVAL:.0f} s | - | 0 | not measured with --quick | | | | | |")
    p50, p99, top = (residual_wait_quantile(q) for q in (0.5, 0.99, 1.0))
    print(
        f"| polling every {POLL_INTERVAL:.0f} s (model: uniform phase, +-{POLL_JITTER:.0%} jitter; "
        f"the check itself not included) | - | - | {fmt(p50)} | {fmt(p99)} | {fmt(top)} | | | |"
    )
    fastest = result.events.get(EVENTS_NO_DELAY)
    if fastest is not None and result.polling is not None:
        ratio = percentile(result.polling.signalled, 0.5) / percentile(fastest.signalled, 0.5)
        print(
            f"Polling every {POLL_INTERVAL:.0f} s / events (max_delay 0), median to app signalled: "
            f"{ratio:,.0f}x"
        )
    pooled = (
        f"Polling samples: {result.polling_agents} agents x {result.rotations} rotations, pooled; the "
        "samples of one agent share its poll times. "
        if result.polling is not None
        else ""
    )
    print(
        f"The AddSecretVersion call itself: {result.add_call_ms:.1f} ms median (inside every latency). "
        f"{pooled}max_delay: on an event each agent first waits a random [0, max_delay] s, so that a fleet's "
        "fetches spread out."
    )


def main(quick: bool = False) -> Result:
    result = measure(quick)
    print_table(result)
    return result


if __name__ == "__main__":
    main("--quick" in sys.argv[1:])
