"""`make soak`: the agent under fire, for minutes, with one table and an exit code at the end.

``python -m bench.soak --duration 10m [--seed N] [--secrets 20] [--json]``

One real ``secrets-agent run`` (a child process) against the Secret Manager emulator (a process of its own)
with Pub/Sub events from the official Pub/Sub emulator, writing to a small tmpfs of its own, telling a real
app (``testing/apps/reloading_app.py``) to reload. For ``--duration`` the soak (see ``bench/soak_plan.py`` for
the schedule, drawn from ``--seed``):

* rotates secrets every second through the official client: one username/password **pair** (two secrets,
  user first) and one single token per tick; every value names its secret and generation and carries a
  checksum (``bench/soak_values.py``);
* switches emulator faults on and off in phases: UNAVAILABLE, RESOURCE_EXHAUSTED, latency spikes past the
  call timeout, corrupted checksums, a tiny access quota, a full outage;
* SIGKILLs the agent at random times and restarts it; stops the Pub/Sub emulator and restarts it on the
  same port; fills the output tmpfs up and frees it;
* reads all the while (``bench/soak_observers.py``): every snapshot through ``..data`` and every file on its
  own; the endpoint, with the token from ``<output>/.token``, plus a long-poll; the app's log of what it
  read at each SIGHUP. A torn read (a value cut or malformed), a mixed read (files of one ``..data`` read
  from different snapshots, an env file line that differs from its file, an endpoint body that is not the
  version its headers state) or a rollback (a version older than one already served) breaks an invariant.

Then rotations and faults stop and it times convergence: every secret at the emulator's latest version in
the files and on the endpoint, /readyz 200, and the app's last read. The agent's memory is sampled all
along; the trend is fitted over the one process that lives through the memory window (no kills there).
At the end: one table (``--json``: a document), exit 1 when an invariant broke, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from agent.config import parse_duration
from bench.soak_observers import (
    AppLogReader,
    EndpointClient,
    EndpointReader,
    FileReader,
    LongPollWatcher,
    Observer,
    Requests,
    RssSampler,
    read_snapshot,
)
from bench.soak_plan import FAULT_KINDS, Plan, make_plan
from bench.soak_report import Invariant, MemoryTrend, kib, memory_trend, table
from bench.soak_values import (
    ENV_FILE,
    MANIFEST,
    PROJECT,
    SecretSet,
    check_snapshot,
    describe,
    leaked_values,
    render,
    secret_set,
)
from bench.soak_world import AgentRunner, App, PubSub, Volume, agent_config, agent_environment
from testing.emulator_process import EmulatorProcess, emulator_process, patched_environ
from testing.emulator_process import write_seed as emulator_seed

TOPIC = f"projects/{PROJECT}/topics/secret-events"
DEFAULT_CONVERGE_WITHIN = 60.0
"""Seconds the agent gets, after faults and rotations stop, to serve every latest version and be ready.
Generous for a loaded 2-core machine: with the faults gone one check round (at most the 2 s backoff cap,
or the 10 s safety poll while events flow) is all it takes."""
READY_TIMEOUT = 90.0
KUBELET_RESTART_DELAY = 1.0


def log(message: str) -> None:
    sys.stderr.write(f"soak: {message}\n")  # one write: lines of several threads never interleave
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Options:
    duration: float
    seed: int = 1
    secrets: int = 20
    converge_within: float = DEFAULT_CONVERGE_WITHIN
    keep: bool = False


# --------------------------------------------------------------------------------------------------
# The operator: rotations
# --------------------------------------------------------------------------------------------------


class Rotator(threading.Thread):
    """Adds the plan's versions through the official client, tick by tick."""

    def __init__(
        self, ep: EmulatorProcess, plan: Plan, seed: int, names: tuple[str, ...], clock: Callable[[], float]
    ):
        super().__init__(name="soak-rotator", daemon=True)
        self.plan = plan
        self.seed = seed
        self.clock = clock
        self.latest = dict.fromkeys(names, 1)
        self.made = 0
        self.errors: list[str] = []
        self._stop_event = threading.Event()
        self._channel = grpc.insecure_channel(ep.grpc_target)
        self.client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=self._channel)
        )

    def run(self) -> None:
        for tick in self.plan.ticks:
            if self._stop_event.wait(max(0.0, tick.at - self.clock())):
                return
            for name in tick.secrets:
                generation = self.latest[name]  # version v holds generation v - 1
                try:
                    version = self.client.add_secret_version(
                        parent=f"projects/{PROJECT}/secrets/{name}",
                        payload=secretmanager_v1.SecretPayload(
                            data=render(name, generation, self.seed).encode()
                        ),
                        timeout=30,
                    )
                except Exception as error:  # counted; the operator's call is not under test
                    self.errors.append(f"{name}: {type(error).__name__}")
                    continue
                number = int(version.name.rsplit("/", 1)[-1])
                if number != generation + 1:
                    self.errors.append(f"{name}: got version {number}, expected {generation + 1}")
                self.latest[name] = number
                self.made += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        self.client.transport.close()


# --------------------------------------------------------------------------------------------------
# Chaos: faults, kills, Pub/Sub outages, disk fills
# --------------------------------------------------------------------------------------------------


@dataclass
class Chaos:
    """Runs the plan's disruptions on time (one thread; Pub/Sub restarts in threads of their own)."""

    plan: Plan
    ep: EmulatorProcess
    agent: AgentRunner
    pubsub: PubSub | None
    volume: Volume
    clock: Callable[[], float]
    kills: int = 0
    restarts: int = 0
    fills: int = 0
    fill_bytes: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def actions(self) -> list[tuple[float, int, str, Callable[[], None]]]:
        timeline: list[tuple[float, int, str, Callable[[], None]]] = []

        def add(at: float, what: str, action: Callable[[], None]) -> None:
            timeline.append((at, len(timeline), what, action))

        for index, phase in enumerate(self.plan.phases):
            add(phase.start, f"faults: {phase.kind}", self._faults_setter(phase.kind, index))
        for kill in self.plan.kills:
            add(kill.at, "kill the agent", self._kill)
            add(kill.at + kill.restart_after, "restart the agent", self._restart)
        if self.pubsub is not None:
            for window in self.plan.pubsub_outages:
                add(window.start, "stop Pub/Sub", self.pubsub.stop)
                add(window.end, "restart Pub/Sub", self._restart_pubsub)
        for window in self.plan.disk_fills:
            add(window.start, "fill the volume", self._fill)
            add(window.end, "free the volume", self.volume.free)
        heapq.heapify(timeline)
        return timeline

    def run(self) -> None:
        timeline = self.actions()
        while timeline:
            at, _, what, action = heapq.heappop(timeline)
            if self._stop_event.wait(max(0.0, at - self.clock())):
                return
            log(f"t={self.clock():6.1f}s {what}")
            try:
                action()
            except Exception as error:  # a failed disruption is reported, the run goes on
                self.errors.append(f"{what}: {type(error).__name__}: {error}")

    def _faults_setter(self, kind: str, index: int) -> Callable[[], None]:
        def set_faults() -> None:
            self.phases[kind] = self.phases.get(kind, 0) + 1
            # A seed per phase: the emulator's draws replay with the same --seed.
            config = {"seed": self.plan.seed * 1000 + index, **FAULT_KINDS.get(kind, {})}
            self.ep.admin("PUT", "/faults", config)

        return set_faults

    def _kill(self) -> None:
        if self.agent.kill():
            self.kills += 1

    def _restart(self) -> None:
        if not self.agent.alive():
            self.agent.start()
            self.restarts += 1

    def _restart_pubsub(self) -> None:
        """In a thread of its own: the JVM takes seconds to start, the schedule goes on meanwhile."""
        assert self.pubsub is not None
        pubsub = self.pubsub

        def restart() -> None:
            try:
                pubsub.restart()
            except Exception as error:  # reported with the results; finish() tries once more
                self.errors.append(f"restart Pub/Sub: {type(error).__name__}: {error}")

        thread = threading.Thread(target=restart, name="soak-pubsub-restart", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fill(self) -> None:
        self.fill_bytes += self.volume.fill()
        self.fills += 1

    def finish(self) -> None:
        """Stop disrupting and leave everything healthy: faults off, disk free, Pub/Sub and the agent up."""
        self._stop_event.set()
        self.ep.admin("PUT", "/faults", {"seed": self.plan.seed})  # also switches quotas off
        self.volume.free()
        for thread in self._threads:
            thread.join(120)
        if self.pubsub is not None and not self.pubsub.up:
            self.pubsub.restart()
        if not self.agent.alive():
            self.agent.start()
            self.restarts += 1


class Kubelet(threading.Thread):
    """Restarts the agent when it exits on its own (recorded as an unexpected exit)."""

    def __init__(self, agent: AgentRunner) -> None:
        super().__init__(name="soak-kubelet", daemon=True)
        self.agent = agent
        self.restarts = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            if self.agent.reap_unexpected():
                log(f"the agent exited on its own: {self.agent.unexpected_exits[-1]}")
                if self._stop_event.wait(KUBELET_RESTART_DELAY):
                    return
                self.agent.start()
                self.restarts += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


# --------------------------------------------------------------------------------------------------
# Convergence
# --------------------------------------------------------------------------------------------------


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except OSError:
        return 0, b"", {}


@dataclass
class Convergence:
    seconds: float | None = None
    app_seconds: float | None = None
    ready: bool = False
    files: bool = False
    endpoint: bool = False
    app: bool = False
    detail: str = ""


def converged_state(
    expected: dict[str, int],
    output_dir: Path,
    secrets: SecretSet,
    client: EndpointClient,
    probes: str,
) -> tuple[bool, bool, bool, str]:
    """(files, endpoint, ready, what is still missing) against the emulator's latest versions."""
    missing: list[str] = []
    read = read_snapshot(output_dir, secrets.names)
    files_ok = False
    if read is not None:
        _, files, manifest, env = read
        verdict = check_snapshot(files, manifest, env, secrets)
        behind = [
            f"{n}@{verdict.versions.get(n)}<{v}" for n, v in expected.items() if verdict.versions.get(n) != v
        ]
        files_ok = verdict.whole and not behind
        if not files_ok:
            missing.append("files: " + describe(behind or verdict.torn + verdict.mixed, 3))
    endpoint_behind = []
    for name, version in expected.items():
        answer = client.get(f"/v1/secrets/{name}", {}, timeout=10)
        if answer is None or answer.version != str(version):
            endpoint_behind.append(f"{name}@{answer.version if answer else None}<{version}")
    if endpoint_behind:
        missing.append("endpoint: " + describe(endpoint_behind, 3))
    status, body, _ = http_get(f"{probes}/readyz")
    if status != 200:
        missing.append(f"readyz {status}: {body[:200].decode(errors='replace')}")
    return files_ok, not endpoint_behind, status == 200, "; ".join(missing)


def app_has_read(app_reader: AppLogReader, expected: dict[str, int]) -> bool:
    with app_reader.tally.lock:
        latest = dict(app_reader.tally.latest)
    return all(latest.get(name) == version for name, version in expected.items())


def await_convergence(
    expected: dict[str, int],
    output_dir: Path,
    secrets: SecretSet,
    client: EndpointClient,
    probes: str,
    app_reader: AppLogReader,
    within: float,
) -> Convergence:
    result = Convergence()
    started = time.monotonic()
    deadline = started + within
    while time.monotonic() < deadline:
        if result.seconds is None:
            files, endpoint, ready, detail = converged_state(expected, output_dir, secrets, client, probes)
            result.files, result.endpoint, result.ready, result.detail = files, endpoint, ready, detail
            if files and endpoint and ready:
                result.seconds = time.monotonic() - started
        if result.app_seconds is None and app_has_read(app_reader, expected):
            result.app_seconds = time.monotonic() - started
            result.app = True
        if result.seconds is not None and result.app_seconds is not None:
            break
        time.sleep(0.2)
    return result


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def write_seed(path: Path, secrets: SecretSet, seed: int, with_topic: bool) -> Path:
    entries: dict[str, Any] = {}
    for name in secrets.names:
        entry: dict[str, Any] = {"value": render(name, 0, seed)}
        if with_topic:
            entry["topics"] = [TOPIC]
        entries[name] = entry
    return emulator_seed(path, PROJECT, entries)


def wait_ready(probes: str, agent: AgentRunner) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while http_get(f"{probes}/readyz")[0] != 200:
        current = agent.current
        if not agent.alive() and current is not None:
            tail = current.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the agent exited before it was ready:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent was not ready within {READY_TIMEOUT:.0f} s")
        time.sleep(0.1)


def scrape(probes: str) -> dict[str, float]:
    status, body, _ = http_get(f"{probes}/metrics")
    if status != 200:
        return {}
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[key] = float(value)
    return values


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory / 1024 / 1024, 1)}


def run_soak(options: Options) -> dict[str, Any]:
    """Run the soak; returns the result document (``ok`` says whether every invariant held)."""
    secrets = secret_set(options.secrets)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    notes: list[str] = []
    with ExitStack() as stack:
        volume = Volume(work)
        stack.callback(volume.close)
        if not volume.mounted:
            notes.append(volume.note)
        plan = make_plan(options.duration, options.seed, secrets, disk=volume.mounted)
        pubsub: PubSub | None = None
        try:
            pubsub = PubSub(TOPIC)
            stack.callback(pubsub.close)
        except Exception as error:  # the soak runs without events and says why
            notes.append(f"no Pub/Sub emulator ({error}): events off, no Pub/Sub outages")
        pubsub_env = {"PUBSUB_EMULATOR_HOST": pubsub.host_port} if pubsub is not None else {}
        with patched_environ(pubsub_env):  # our emulator publishes its events there
            ep = stack.enter_context(
                emulator_process(write_seed(work / "seed.yaml", secrets, options.seed, True))
            )
        files = [*secrets.names, MANIFEST, ENV_FILE]
        app = App(work, volume.output_dir, files)
        stack.callback(app.close)
        endpoint_port, probes_port = free_port(), free_port()
        probes = f"http://127.0.0.1:{probes_port}"
        config = agent_config(
            work / "agent.yaml",
            names=list(secrets.names),
            project=PROJECT,
            output_dir=volume.output_dir,
            env_file=ENV_FILE,
            pid_file=app.pid_file,
            endpoint_port=endpoint_port,
            probes_port=probes_port,
            topic=TOPIC if pubsub is not None else None,
        )
        t0 = time.monotonic()

        def clock() -> float:
            return time.monotonic() - t0

        logs = work / "logs"
        logs.mkdir()
        env = agent_environment(ep.grpc_target, pubsub.host_port if pubsub is not None else None)
        agent = AgentRunner(config, env, logs, clock)
        stack.callback(agent.stop)
        agent.start()
        log(f"work directory {work}; output on {volume.describe}; waiting for the agent to be ready")
        wait_ready(probes, agent)
        t0 = time.monotonic()  # the schedule starts with the agent serving
        start_incarnation = agent.current
        assert start_incarnation is not None
        start_incarnation.started = clock()

        requests = Requests()
        client = EndpointClient(endpoint_port, volume.output_dir, agent, requests)
        file_reader = FileReader(volume.output_dir, secrets)
        app_reader = AppLogReader(app.log, secrets)
        readers = [
            EndpointReader(client, secrets, 0),
            EndpointReader(client, secrets, len(secrets.names) // 2),
        ]
        long_poll = LongPollWatcher(client, plan.most_rotated(secrets.names))
        rss = RssSampler(agent, clock)
        observers: list[Observer] = [file_reader, app_reader, *readers, long_poll, rss]
        rotator = Rotator(ep, plan, options.seed, secrets.names, clock)
        chaos = Chaos(plan, ep, agent, pubsub, volume, clock)
        kubelet = Kubelet(agent)
        chaos_thread = threading.Thread(target=chaos.run, name="soak-chaos", daemon=True)
        for thread in (*observers, rotator, kubelet, chaos_thread):
            thread.start()
        log(f"running for {options.duration:.0f} s (seed {options.seed}, {len(secrets.names)} secrets)")

        while clock() < plan.faults_stop:
            time.sleep(min(1.0, plan.faults_stop - clock()))
        rotator.stop()
        chaos_thread.join(5)
        chaos.finish()
        faults_stopped = clock()
        log(f"t={faults_stopped:6.1f}s faults and rotations stopped; waiting for convergence")
        convergence = await_convergence(
            dict(rotator.latest),
            volume.output_dir,
            secrets,
            client,
            probes,
            app_reader,
            options.converge_within,
        )
        log(f"converged: {convergence}")
        # The readers go on until the duration is up (at least one more second): the converged, quiet state
        # is read too, and --duration is the length of the run.
        time.sleep(max(1.0, options.duration - clock()))
        metrics = scrape(probes)
        kubelet.stop()
        for observer in observers:
            observer.stop()
        final_exit = agent.stop()
        counters = ep.admin("GET", "/counters")
        result = assemble(
            options=options,
            plan=plan,
            secrets=secrets,
            notes=notes,
            volume=volume,
            pubsub=pubsub,
            agent=agent,
            chaos=chaos,
            kubelet=kubelet,
            rotator=rotator,
            file_reader=file_reader,
            app_reader=app_reader,
            readers=readers,
            long_poll=long_poll,
            observers=observers,
            requests=requests,
            convergence=convergence,
            memory=memory_trend(rss.samples, (plan.chaos_end, faults_stopped)),
            rss_samples=[(round(t, 2), k, kib) for t, k, kib in rss.samples],
            metrics=metrics,
            counters=counters,
            final_exit=final_exit,
            work=work,
        )
    if result["ok"] and not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["work_dir"] = str(work)
        (work / "result.json").write_text(json.dumps(result, indent=2))
    return result


def assemble(
    *,
    options: Options,
    plan: Plan,
    secrets: SecretSet,
    notes: list[str],
    volume: Volume,
    pubsub: PubSub | None,
    agent: AgentRunner,
    chaos: Chaos,
    kubelet: Kubelet,
    rotator: Rotator,
    file_reader: FileReader,
    app_reader: AppLogReader,
    readers: list[EndpointReader],
    long_poll: LongPollWatcher,
    observers: list[Observer],
    requests: Requests,
    convergence: Convergence,
    memory: MemoryTrend,
    rss_samples: list[tuple[float, int, int]],
    metrics: dict[str, float],
    counters: dict[str, Any],
    final_exit: int | None,
    work: Path,
) -> dict[str, Any]:
    """The result document, with the invariants judged."""
    endpoint = readers[0].tally
    for reader in readers[1:]:  # one tally for both endpoint readers
        endpoint.reads += reader.tally.reads
        endpoint.torn += reader.tally.torn
        endpoint.mixed += reader.tally.mixed
        endpoint.rollbacks += reader.tally.rollbacks
        endpoint.seen |= reader.tally.seen
        endpoint.examples += reader.tally.examples
    tallies = {
        "files (..data snapshots)": file_reader.tally,
        "files (one at a time)": file_reader.single_files,
        "endpoint GET": endpoint,
        "endpoint long-poll": long_poll.tally,
        "app reloads": app_reader.tally,
    }
    agent_logs = "".join(i.log.read_text(errors="replace") for i in agent.incarnations)
    leaks = leaked_values(agent_logs)
    write_failures = agent_logs.count("snapshot failed")
    torn = sum(t.torn for t in tallies.values())
    mixed = sum(t.mixed for t in tallies.values())
    rollbacks = sum(t.rollbacks for t in tallies.values())
    crashed = [f"{o.name}: {o.crash}" for o in observers if o.crash]
    access = counters.get("methods", {}).get("AccessSecretVersion", {})
    events_connected = metrics.get("secrets_agent_events_connected")
    bound = options.converge_within
    observed = {name: t.rotations_observed() for name, t in tallies.items()}

    invariants = [
        Invariant("torn reads (all readers)", str(torn), "0", torn == 0),
        Invariant("mixed reads (all readers)", str(mixed), "0", mixed == 0),
        Invariant("rollbacks (a version older than one already served)", str(rollbacks), "0", rollbacks == 0),
        Invariant(
            "endpoint requests failed while the agent was up",
            str(requests.failed_up),
            "0",
            requests.failed_up == 0,
        ),
        Invariant(
            "converged after faults stopped (files, endpoint, /readyz)",
            f"{convergence.seconds:.1f} s"
            if convergence.seconds is not None
            else f"no: {convergence.detail}",
            f"within {bound:.0f} s",
            convergence.seconds is not None,
        ),
        Invariant(
            "ready after faults stopped",
            "yes" if convergence.ready else "no",
            "yes",
            convergence.ready,
        ),
        Invariant(
            "the app read the final versions (after its SIGHUP)",
            f"{convergence.app_seconds:.1f} s" if convergence.app_seconds is not None else "no",
            f"within {bound:.0f} s",
            convergence.app_seconds is not None,
        ),
        Invariant("memory growth over the memory window", memory.describe(), "no growth trend", memory.ok),
        Invariant("secret values in the agent's logs", str(len(leaks)), "0", not leaks),
        Invariant(
            "agent exits not caused by the soak",
            str(len(agent.unexpected_exits)),
            "0",
            not agent.unexpected_exits,
        ),
        Invariant(
            "rotations observed by every reader (the fewest)",
            str(min(observed.values())),
            "> 0",
            min(observed.values()) > 0,
        ),
        Invariant(
            "readers and chaos ran without errors",
            describe(crashed + chaos.errors + rotator.errors) or "yes",
            "yes",
            not crashed and not chaos.errors and not rotator.errors,
        ),
    ]
    if pubsub is not None:
        invariants.append(
            Invariant(
                "events connected again at the end",
                str(events_connected),
                "1",
                events_connected == 1,
            )
        )
    if final_exit not in (0, None):
        invariants.append(Invariant("the agent stopped cleanly on SIGTERM", str(final_exit), "0", False))

    rows = [
        (
            "duration, seed, secrets",
            f"{options.duration:.0f} s, seed {options.seed}, {len(secrets.names)} "
            f"({len(secrets.pairs)} pairs)",
            "",
        ),
        ("rotations made (AddSecretVersion)", str(rotator.made), ""),
        *[
            (f"rotations observed: {name}", f"{observed[name]} ({tallies[name].reads} reads)", "")
            for name in tallies
            if name != "files (one at a time)"
        ],
        ("distinct snapshots read through ..data", str(len(file_reader.snapshots)), ""),
        ("app reloads received (SIGHUP, whole snapshot re-read)", str(app_reader.reloads), ""),
        ("long-poll wake-ups", str(long_poll.wakeups), ""),
        (
            "pair reads split across generations (two secrets; see README)",
            str(sum(t.split_pairs for t in tallies.values())),
            "allowed",
        ),
        (
            "reads of a snapshot replaced during the read (retried)",
            str(sum(t.vanished for t in tallies.values())),
            "allowed",
        ),
        ("endpoint requests served", str(requests.served), ""),
        ("endpoint requests failed while the agent restarted", str(requests.failed_restarting), "allowed"),
        ("endpoint token re-read after a restart", str(requests.token_reread), ""),
        ("fault phases", ", ".join(f"{k} {v}" for k, v in sorted(chaos.phases.items())), ""),
        (
            "AccessSecretVersion answers by status",
            ", ".join(f"{k} {v}" for k, v in sorted(access.items())),
            "",
        ),
        ("agent SIGKILLs / restarts", f"{chaos.kills} / {chaos.restarts + kubelet.restarts}", ""),
        ("Pub/Sub restarts", str(pubsub.restarts) if pubsub is not None else "none: no Pub/Sub emulator", ""),
        (
            "disk fills (snapshot writes refused by the full volume)",
            f"{chaos.fills} ({write_failures})" if volume.mounted else volume.note,
            "",
        ),
        ("agent RSS at start / at the end", f"{kib(memory.start_kib)} / {kib(memory.end_kib)}", ""),
    ]
    ok = all(inv.ok for inv in invariants)
    return {
        "ok": ok,
        "machine": machine(),
        "options": {
            "duration_s": options.duration,
            "seed": options.seed,
            "secrets": len(secrets.names),
            "pairs": len(secrets.pairs),
            "converge_within_s": bound,
        },
        "notes": notes,
        "plan": plan.to_json(),
        "rotations": {"made": rotator.made, "errors": rotator.errors, "observed": observed},
        "observers": {name: t.to_json() for name, t in tallies.items()},
        "snapshots_read": len(file_reader.snapshots),
        "app": {"reloads": app_reader.reloads},
        "long_poll_wakeups": long_poll.wakeups,
        "requests": requests.to_json(),
        "faults": {"phases": chaos.phases, "access_calls_by_status": access, "errors": chaos.errors},
        "agent": {
            "kills": chaos.kills,
            "restarts": chaos.restarts + kubelet.restarts,
            "incarnations": len(agent.incarnations),
            "unexpected_exits": agent.unexpected_exits,
            "snapshot_write_failures": write_failures,
            "final_exit_code": final_exit,
        },
        "pubsub": {
            "available": pubsub is not None,
            "restarts": pubsub.restarts if pubsub is not None else 0,
            "events_connected_at_end": events_connected,
        },
        "disk": {"volume": volume.describe, "fills": chaos.fills, "filled_bytes": chaos.fill_bytes},
        "convergence": {
            "seconds": convergence.seconds,
            "app_seconds": convergence.app_seconds,
            "bound_s": bound,
            "ready": convergence.ready,
            "detail": convergence.detail,
        },
        "memory": {**memory.to_json(), "samples": rss_samples},
        "leaks": len(leaks),
        "invariants": [inv.to_json() for inv in invariants],
        "table": table(rows, invariants),
    }


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10m", help="how long (30s, 10m, 1h); at least 20s")
    parser.add_argument("--seed", type=int, default=1, help="draws the schedule and the values (default 1)")
    parser.add_argument("--secrets", type=int, default=20, help="how many secrets (default 20, at least 3)")
    parser.add_argument("--converge-within", default="60s", help="convergence bound after faults stop")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    args = parser.parse_args(argv)
    try:
        duration = parse_duration(args.duration)
        converge = parse_duration(args.converge_within)
    except ValueError as error:
        parser.error(str(error))
    if duration < 20:
        parser.error(f"--duration must be at least 20s, got {args.duration}")
    if args.secrets < 3:
        parser.error(f"--secrets must be at least 3, got {args.secrets}")
    return Options(duration, args.seed, args.secrets, converge, args.keep), bool(args.json)


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds the run like Ctrl-C: agent and emulators stopped, the tmpfs unmounted."""
    raise SystemExit(f"soak: stopped by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    options, as_json = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        result = run_soak(options)
    except RuntimeError as error:  # a part that could not start: one line, not a traceback
        log(f"error: {error}")
        return 1
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        m = result["machine"]
        print(
            f"\nSoak: `python -m bench.soak --duration {options.duration:g}s --seed {options.seed} --secrets "
            f"{options.secrets}` on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB"
        )
        for note in result["notes"]:
            print(f"note: {note}")
        print(result["table"])
        for name, tally in result["observers"].items():
            for example in tally["examples"]:
                print(f"{name}: {example}")
        if "work_dir" in result:
            print(f"logs, result.json (with the RSS samples): {result['work_dir']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
