"""The fleet with selections: every agent asks for ``SECRETS`` secrets by name and for every secret labelled
``team=payments`` (``SELECTED`` of them), and the read quota (ListSecrets) is on, scaled like the access
quota: 600/min x 200 / 10,000 = 12 reads per simulated minute for 200 agents.

**Restart within one simulated minute** (``restart``), twice side by side: *resolved at admission* (each
pod's configuration comes from the webhook with the selection's ``known`` ids and ``known_at``:
``admission``) and *nothing known* (every agent lists after ``discovery.start_jitter: auto``). Time runs
``RESTART_COMPRESSION`` times faster (1 simulated minute = 6 s): every duration of the agent (start jitter,
re-list interval, poll interval, backoff) is its value for 10,000 pods divided by the compression
(``world.compressed_settings``), and the quotas are per simulated minute (``instruments.QuotaClock``
restarts the emulator's windows every 6 s). No events: what is measured is the start. Figures: the
agents' listings (reported by each agent's discovery) per simulated minute, scaled x50 to 10,000 pods,
beside admission's own listings, which are the fleet's and not scaled; RESOURCE_EXHAUSTED per method (the
access quota is exceeded by any restart of the whole fleet within a minute: 200,000 accesses against
90,000); and the time until every agent holds every explicit and every matching secret.

**Steady state with events** (``steady``): the fleet admitted with known ids, events on, the re-list and the
safety poll (1 h each for 10,000 pods with events) compressed x60 (1 simulated hour = 60 s), quotas per
simulated minute; the first re-list wave after the restart (every ``known_at`` is the one listing's),
then a window of ``STEADY_INTERVALS`` simulated hours: reads and access calls per pod-hour. In the window a
new matching secret is created: every agent delivers it through the SECRET_CREATE event, in real time
(the event path is not compressed; its delay spread, ``events.spread``, is 13.3 s for 10,000 pods).

**``rotate all``** (``rotate_all``): the fleet admitted with known ids, events on, real time; ``python -m
agent rotate all`` (20 secrets; 4 named ones with ``--quick``) paced for the simulated fleet (13.3 s apart,
as for 10,000 pods), the access quota scaled (1,800/min), read and write quotas the service's (the rotator
is one process whatever the fleet); per rotation, the time until every agent serves the new version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import events_world, secret_manager_client
from bench.fleet.admission import Admitted, admit, nothing_known
from bench.fleet.driver import FleetState, fleet_workers, wait_until
from bench.fleet.instruments import MethodCounters, QuotaClock, Sample, calls, delta, exhausted
from bench.fleet.rotate_all import RotateRun, rotate, rotation_config
from bench.fleet.world import (
    EVENT_START_SPREAD,
    NEW_SECRET,
    PROJECT,
    QUICK_RESTART_COMPRESSION,
    QUICK_ROTATE_ALL,
    QUICK_STEADY_COMPRESSION,
    QUICK_STEADY_INTERVALS,
    REPRESENTED_PODS,
    RESTART_COMPRESSION,
    ROTATE_ALL,
    SAFETY_POLL,
    SECRETS,
    SELECT_LABEL,
    SELECTED,
    SELECTION_TIMEOUT,
    SERVICE_READ_WRITE_PER_MINUTE,
    SETTLE_INTERVALS,
    STARTUP_TIMEOUT,
    STEADY_COMPRESSION,
    STEADY_INTERVALS,
    TOPIC,
    compressed_settings,
    fleet_shares,
    fleet_size,
    scaled_access_quota,
    scaled_read_quota,
    secret_id,
    selected_id,
    selection_names,
    write_selection_seed,
)
from testing.emulator_process import EmulatorProcess, emulator_process

LIST = "ListSecrets"
ACCESS = "AccessSecretVersion"


def _quotas(agents: int, *, reads: float | None = None) -> dict[str, int]:
    return {
        "access_per_minute": scaled_access_quota(agents),
        "read_per_minute": max(1, round(scaled_read_quota(agents) if reads is None else reads)),
        "write_per_minute": SERVICE_READ_WRITE_PER_MINUTE,
    }


def _write_configs(directory: Path, configs: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for ident, text in enumerate(configs):
        (directory / f"agent-{ident:04d}.yaml").write_text(text)
    return directory


def _peak(times: list[float], window: float) -> int:
    """Most of ``times`` within any ``window`` seconds."""
    ordered, best, j = sorted(times), 0, 0
    for i, t in enumerate(ordered):
        j = max(j, i)
        while j + 1 < len(ordered) and ordered[j + 1] <= t + window:
            j += 1
        best = max(best, j - i + 1)
    return best


@dataclass(frozen=True)
class Reads:
    """The agents' listing calls over a phase, and admission's."""

    agent_calls: int
    agent_exhausted: int
    peak_per_minute: int
    """Most agent listing calls within one simulated minute."""
    admission_calls: int
    """ListSecrets made by admission (the webhook's shared listing): the fleet's, not scaled."""
    quota_per_minute: int
    """The read quota per simulated minute (scaled to the agents)."""

    def scaled_peak(self, agents: int) -> float:
        """The peak per simulated minute for 10,000 pods: the agents' x REPRESENTED_PODS / agents, plus
        admission's listings (all of them, as if in that minute)."""
        return self.peak_per_minute * REPRESENTED_PODS / agents + self.admission_calls


def _reads(
    state: FleetState,
    moved: dict[str, dict[str, int]],
    start: float,
    end: float,
    minute: float,
    quota: int,
) -> Reads:
    with state.lock:
        listings = [(t, code) for _, t, code in state.listings if start <= t <= end]
    agent_calls = len(listings)
    total = sum(moved.get(LIST, {}).values())
    return Reads(
        agent_calls=agent_calls,
        agent_exhausted=sum(1 for _, code in listings if code == "RESOURCE_EXHAUSTED"),
        peak_per_minute=_peak([t for t, _ in listings], minute),
        admission_calls=max(0, total - agent_calls),
        quota_per_minute=quota,
    )


@dataclass(frozen=True)
class SelectionRestart:
    """One fleet restart with selections (module docstring); times in simulated seconds."""

    title: str
    agents: int
    compression: float
    admission_seconds: float | None
    """Wall time the real webhook took to admit the pods; None: nothing known (no admission resolution)."""
    reads: Reads
    exhausted: dict[str, int]
    """RESOURCE_EXHAUSTED answers per method over the restart."""
    access_calls: int
    converged: float
    """From the first pod's start until every agent held every explicit and every matching secret."""
    pod_converged: list[float]
    """Per agent, from its own start until it held them all, sorted."""

    @property
    def admitted_by(self) -> str:
        """``webhook`` (the real one resolved the selections), or ``-`` when nothing was known."""
        return "-" if self.admission_seconds is None else "webhook"


def restart(
    ep: EmulatorProcess, work: Path, agents: int, known: bool, env: dict[str, str], compression: float
) -> SelectionRestart:
    title = "resolved at admission" if known else "nothing known"
    scratch = work / ("restart-known" if known else "restart-unknown")
    minute = 60.0 / compression
    ep.admin("POST", "/counters:reset")
    state = FleetState()
    flags = {**compressed_settings(compression, events=False), **fleet_shares(agents)}
    with (
        MethodCounters(ep, 0.1) as counters,
        QuotaClock(ep, _quotas(agents), compression),
    ):
        begin = counters.read()
        admitted: Admitted | None = None
        if known:
            admitted = admit(ep, scratch, agents, agents, False, cache_ttl=minute)
            configs = admitted.configs
        else:
            configs = nothing_known(agents, agents, False)
        config_dir = _write_configs(scratch / "configs", configs)
        with fleet_workers(
            state,
            ep,
            scratch,
            agents,
            poll_interval=300.0 / compression,
            spread=minute,  # every pod restarts within one simulated minute
            events=False,
            env=env,
            config_dir=config_dir,
            flags=flags,
        ):
            names = selection_names()
            wait_until(
                lambda: state.holding(agents, names) is not None, SELECTION_TIMEOUT, "convergence", state
            )
            end = counters.read()
    held = state.holding(agents, names)
    assert held is not None
    starts = {agent: min(times) for agent, times in state.starts.items()}
    first = min(starts.values())
    moved = delta(begin, end)
    return SelectionRestart(
        title=title,
        agents=agents,
        compression=compression,
        admission_seconds=admitted.seconds if admitted is not None else None,
        reads=_reads(state, moved, begin[0], end[0], minute, _quotas(agents)["read_per_minute"]),
        exhausted=exhausted(moved),
        access_calls=sum(moved.get(ACCESS, {}).values()),
        converged=(max(held) - first) * compression,
        pod_converged=sorted(
            (t - starts[a]) * compression for a, t in zip(sorted(state.versions), held, strict=True)
        ),
    )


@dataclass(frozen=True)
class Steady:
    """The steady state with events and selections (module docstring)."""

    agents: int
    compression: float
    wave: Reads
    """The first re-list after the restart (from admission until every agent listed once)."""
    wave_seconds: float
    """Simulated seconds the wave took, from the first agent's listing to the last's."""
    window: Reads
    window_hours: float
    """Simulated hours of the steady window."""
    window_access: int
    exhausted: dict[str, int]
    """RESOURCE_EXHAUSTED per method from admission to the end of the window."""
    new_secret: list[float]
    """Real seconds from CreateSecret + AddSecretVersion of the new matching secret until each agent held
    it (sorted)."""
    spread: float
    """The agents' event delay spread (``events.spread`` for the fleet), seconds."""

    @property
    def reads_per_pod_hour(self) -> float:
        return self.window.agent_calls / (self.agents * self.window_hours)

    @property
    def access_per_pod_hour(self) -> float:
        """Access calls per pod-hour in the window, the new secret's first fetch (one per pod) left out."""
        return (self.window_access - self.agents) / (self.agents * self.window_hours)


def steady(
    ep: EmulatorProcess, work: Path, agents: int, quick: bool, env: dict[str, str], compression: float
) -> Steady:
    from agent.config import EventsConfig, FleetConfig

    scratch = work / "steady"
    interval = SAFETY_POLL / compression
    minute = 60.0 / compression
    hours = QUICK_STEADY_INTERVALS if quick else STEADY_INTERVALS
    ep.admin("POST", "/counters:reset")
    state = FleetState()
    flags = {**compressed_settings(compression, events=True), **fleet_shares(agents)}
    flags["poll_interval"] = "300s"  # before its subscription works, an agent polls: real time, as a start
    access_share = int(str(flags["fleet.access_per_minute"]))
    spread = EventsConfig().spread_seconds(FleetConfig(size=agents, access_per_minute=access_share))
    with (
        MethodCounters(ep, 0.05) as counters,
        QuotaClock(ep, _quotas(agents), compression),
    ):
        begin = counters.read()
        admitted = admit(ep, scratch, agents, agents, True, cache_ttl=minute)
        config_dir = _write_configs(scratch / "configs", admitted.configs)
        with fleet_workers(
            state,
            ep,
            scratch,
            agents,
            poll_interval=300.0,
            spread=EVENT_START_SPREAD,
            events=True,
            env=env,
            config_dir=config_dir,
            flags=flags,
        ):
            wait_until(
                lambda: state.count(lambda s: sum(s.healthy.values())) == agents,
                STARTUP_TIMEOUT,
                "every agent's subscription",
                state,
            )
            wait_until(
                lambda: state.count(lambda s: len({a for a, _, c in s.listings if c == "OK"})) == agents,
                STARTUP_TIMEOUT,
                "every agent's first re-list",
                state,
            )
            wave_end = counters.read()
            with state.lock:
                wave_times = [t for _, t, _ in state.listings]
            time.sleep(SETTLE_INTERVALS * interval)
            window_start = counters.read()
            time.sleep(0.3 * hours * interval)
            created = _create_new_secret(ep)
            wait_until(
                lambda: state.holding(agents, [NEW_SECRET]) is not None,
                spread + 60.0,
                "the new secret everywhere",
                state,
            )
            held = state.holding(agents, [NEW_SECRET])
            assert held is not None
            remaining = window_start[0] + hours * interval - time.monotonic()
            time.sleep(max(0.0, remaining))
            window_end = counters.read()
    quota = _quotas(agents)["read_per_minute"]
    wave = _reads(state, delta(begin, wave_end), begin[0], wave_end[0], minute, quota)
    window_moved = delta(window_start, window_end)
    window = _reads(state, window_moved, window_start[0], window_end[0], minute, quota)
    return Steady(
        agents=agents,
        compression=compression,
        wave=wave,
        wave_seconds=(max(wave_times) - min(wave_times)) * compression,
        window=window,
        window_hours=(window_end[0] - window_start[0]) * compression / 3600,
        window_access=sum(window_moved.get(ACCESS, {}).values()),
        exhausted=exhausted(delta(begin, window_end)),
        new_secret=sorted(t - created for t in held),
        spread=spread,
    )


def _create_new_secret(ep: EmulatorProcess) -> float:
    """A new secret labelled as the selection wants, with a version (and the topic): when it started."""
    from google.cloud import secretmanager_v1

    client = secret_manager_client(ep.grpc_target)
    started = time.monotonic()
    try:
        secret = client.create_secret(
            parent=f"projects/{PROJECT}",
            secret_id=NEW_SECRET,
            secret=secretmanager_v1.Secret(
                replication={"automatic": {}},
                labels={SELECT_LABEL[0]: SELECT_LABEL[1]},
                topics=[secretmanager_v1.Topic(name=TOPIC)],
            ),
        )
        client.add_secret_version(parent=secret.name, payload=secretmanager_v1.SecretPayload(data=b"new"))
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    return started


@dataclass(frozen=True)
class RotateAll:
    agents: int
    targets: list[str]
    run: RotateRun
    spacing: float
    """The pacing ``rotate`` applies (60 x fleet.size / access_per_minute)."""
    convergence: dict[str, float]
    """Per secret rotated, seconds from its new version until every agent served it."""
    exhausted: dict[str, int]
    access_calls: int
    peak_access_per_minute: int
    access_quota: int
    done: float
    """Seconds from rotate's start until every agent served every new version."""


def rotate_all(ep: EmulatorProcess, work: Path, agents: int, quick: bool, env: dict[str, str]) -> RotateAll:
    from agent.config import FleetConfig
    from agent.rotation.pacing import Pacing

    scratch = work / "rotate-all"
    shares = fleet_shares(agents)
    fleet = FleetConfig(size=agents, access_per_minute=int(str(shares["fleet.access_per_minute"])))
    ep.admin("POST", "/counters:reset")
    state = FleetState()
    count = QUICK_ROTATE_ALL if quick else ROTATE_ALL
    targets = ["all"] if count == SECRETS + SELECTED else _some(count)
    quotas = _quotas(agents, reads=SERVICE_READ_WRITE_PER_MINUTE)
    with MethodCounters(ep, 0.1) as counters:
        admitted = admit(ep, scratch, agents, agents, True, cache_ttl=60.0)
        config_dir = _write_configs(scratch / "configs", admitted.configs)
        with fleet_workers(
            state,
            ep,
            scratch,
            agents,
            poll_interval=300.0,
            spread=EVENT_START_SPREAD,
            events=True,
            env=env,
            config_dir=config_dir,
            flags=dict(shares),
        ):
            wait_until(
                lambda: state.count(lambda s: sum(s.healthy.values())) == agents,
                STARTUP_TIMEOUT,
                "every agent's subscription",
                state,
            )
            _quiet(counters)  # the catch-up checks after each subscription's creation are done
            # Quotas on from here, a fresh window: the fleet's start is the restart scenario's business.
            with QuotaClock(ep, quotas, 1.0):
                begin = counters.read()
                config = rotation_config(scratch / "rotation.yaml", shares)
                pacing = Pacing(fleet)
                run = rotate(ep.grpc_target, config, targets, shares, pacing.total_seconds(count) + 300)
                wait_until(
                    lambda: all(state.served_at(agents, n, v) is not None for n, (v, _) in run.added.items()),
                    pacing.fetch_spread + 60.0,
                    "every new version everywhere",
                    state,
                )
                end = counters.read()
    convergence: dict[str, float] = {}
    last = 0.0
    for name, (version, added) in run.added.items():
        served = state.served_at(agents, name, version)
        assert served is not None
        convergence[name] = max(served) - added
        last = max(last, max(served))
    moved = delta(begin, end)
    return RotateAll(
        agents=agents,
        targets=targets,
        run=run,
        spacing=pacing.spacing,
        convergence=convergence,
        exhausted=exhausted(moved),
        access_calls=sum(moved.get(ACCESS, {}).values()),
        peak_access_per_minute=_peak_calls(counters.samples, begin[0], end[0], ACCESS, 60.0),
        access_quota=quotas["access_per_minute"],
        done=last - run.started,
    )


def _quiet(counters: MethodCounters, quiet: float = 1.5, within: float = 60.0) -> None:
    """Return once the access counter has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + within
    last, since = calls(counters.read(), ACCESS), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise RuntimeError("the fleet never went quiet after its start")
        time.sleep(0.1)
        now = calls(counters.read(), ACCESS)
        if now != last:
            last, since = now, time.monotonic()


def _some(count: int) -> list[str]:
    """``count`` of the rotated secrets, half explicit, half selected."""
    half = count // 2
    return [secret_id(i) for i in range(count - half)] + [selected_id(i) for i in range(half)]


def _peak_calls(samples: list[Sample], start: float, end: float, method: str, window: float) -> int:
    chosen = [(t, calls((t, m), method)) for t, m in samples if start <= t <= end]
    best, j = 0, 0
    for i, (t, value) in enumerate(chosen):
        j = max(j, i)
        while j + 1 < len(chosen) and chosen[j + 1][0] <= t + window:
            j += 1
        best = max(best, chosen[j][1] - value)
    return best


@dataclass(frozen=True)
class SelectionResult:
    agents: int
    restarts: list[SelectionRestart]
    steady: Steady | None
    rotate_all: RotateAll | None
    events_note: str
    notes: list[str] = field(default_factory=list)


def measure_selections(quick: bool = False) -> SelectionResult:
    """Every selection scenario against one emulator seeded with the selection world (``python -m
    bench.fleet selections``), with the Pub/Sub emulator for the event ones."""
    agents = fleet_size(quick)
    restart_compression = QUICK_RESTART_COMPRESSION if quick else RESTART_COMPRESSION
    steady_compression = QUICK_STEADY_COMPRESSION if quick else STEADY_COMPRESSION
    with events_world("bench-fleet-select-", TOPIC) as world:
        work, env = world.work, world.env
        restarts = []
        for known in (True, False):
            # A fresh emulator each: nothing left of the other's quota windows or secrets.
            with emulator_process(write_selection_seed(work / "seed.yaml")) as ep:
                restarts.append(restart(ep, work, agents, known, env, restart_compression))
        if world.pubsub_host is None:
            return SelectionResult(agents, restarts, None, None, world.events_note)
        with emulator_process(write_selection_seed(work / "seed.yaml")) as ep:
            steady_result = steady(ep, work, agents, quick, env, steady_compression)
        with emulator_process(write_selection_seed(work / "seed.yaml")) as ep:
            rotated = rotate_all(ep, work, agents, quick, env)
        return SelectionResult(agents, restarts, steady_result, rotated, world.events_note)
