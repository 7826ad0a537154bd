"""The fleet's modes, each one measured end to end: polling every 2 minutes, hourly, and events with the
1 h safety poll; before them, fleet restarts (every pod's init container within a minute, quotas on);
``measure`` runs them one after the other against one emulator.

Each scenario starts its fleet (``driver``), resets and samples the emulator's counters (``instruments``),
goes through its phases (the package docstring describes them) and returns its figures as a ``Scenario``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import events_world, shm_tmpdir
from bench.fleet.driver import FleetState, fleet_workers, tell, wait_until
from bench.fleet.instruments import Counters, Rotation, Rotator, converge, set_quotas
from bench.fleet.selections import SelectionResult
from bench.fleet.world import (
    EVENT_ROTATIONS,
    EVENT_START_SPREAD,
    IDLE_WINDOW,
    QUICK_EVENT_ROTATIONS,
    QUICK_IDLE_WINDOW,
    QUICK_WALL_INTERVAL,
    RESTART_SHAPES,
    RESTART_SPREAD,
    RESTART_TIMEOUT,
    SAFETY_POLL,
    SAMPLE_PERIOD_MIN,
    SECRETS,
    SETTLE_INTERVALS,
    STARTUP_TIMEOUT,
    TOPIC,
    WALL_INTERVAL,
    WINDOW_INTERVALS,
    RestartShape,
    fleet_size,
    scaled_access_quota,
    secret_id,
    write_seed,
)
from testing.emulator_process import EmulatorProcess, emulator_process


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


@dataclass(frozen=True)
class Restart:
    """A fleet restart as the emulator and the pods saw it; seconds are real (nothing is compressed)."""

    shape: RestartShape
    agents: int
    concurrency: int | None
    """The agents' ``--concurrency`` (None: the default)."""
    spread: float
    """The pods restarted at random moments over this many seconds."""
    quota_per_minute: int
    needed: int
    """Access calls the restart needs at the least: one per secret per pod."""
    admitted: int
    """Access calls the quota let through (first fetches, plus fetches repeated by restarted pods)."""
    exhausted: int
    """RESOURCE_EXHAUSTED answers (refused calls, retried with backoff)."""
    peak_admitted: int
    """Most admitted calls within any 60 s."""
    init_failures: int
    """Init containers whose bootstrap missed its deadline (``init`` exits non-zero; the kubelet restarts
    it)."""
    pods_restarted: int
    """Pods with at least one such failure."""
    ready: float
    """Seconds from the first pod's start until the last pod's init container succeeded."""
    pod_ready: list[float]
    """Per pod, seconds from its (first) start until its init container succeeded."""

    @property
    def exhausted_per_call(self) -> float:
        return self.exhausted / self.needed


def restart_scenario(
    ep: EmulatorProcess,
    work: Path,
    fleet: int,
    shape: RestartShape,
    env: dict[str, str],
    *,
    concurrency: int | None = None,
    spread: float = RESTART_SPREAD,
) -> Restart:
    """Every pod of ``shape`` (its share for a benchmark fleet of ``fleet`` agents) restarts within ``spread``
    seconds, with the access quota on (scaled to that share), in real time."""
    agents, quota = shape.agents(fleet), shape.quota(fleet)
    ep.admin("POST", "/counters:reset")
    set_quotas(ep, quota)  # a fresh quota window: nothing before the restart counts against it
    state = FleetState()
    title = f"restart-{shape.pods}x{shape.secrets}-c{concurrency or 'default'}-s{spread:g}"
    with (
        Counters(ep, 0.1) as counters,
        fleet_workers(
            state,
            ep,
            work / title,
            agents,
            poll_interval=SAFETY_POLL,
            spread=spread,
            events=False,
            env=env,
            secrets=shape.secrets,
            concurrency=concurrency,
            restart=True,
        ),
    ):
        wait_until(lambda: state.count(lambda s: len(s.boots)) == agents, RESTART_TIMEOUT, "ready", state)
        _, calls, exhausted = counters.read()
        samples = [(t, total - refused) for t, total, refused in counters.samples]
    first = min(min(times) for times in state.starts.values())
    return Restart(
        shape=shape,
        agents=agents,
        concurrency=concurrency,
        spread=spread,
        quota_per_minute=quota,
        needed=agents * shape.secrets,
        admitted=calls - exhausted,
        exhausted=exhausted,
        peak_admitted=_peak(samples, 60.0),
        init_failures=len(state.init_failures),
        pods_restarted=len({agent for agent, *_ in state.init_failures}),
        ready=max(state.boots.values()) - first,
        pod_ready=sorted(state.boots[a] - min(state.starts[a]) for a in state.boots),
    )


def _peak(samples: Sequence[tuple[float, int]], window: float) -> int:
    """Most growth of a sampled counter within any ``window`` seconds."""
    best, j = 0, 0
    for i, (t, value) in enumerate(samples):
        j = max(j, i)
        while j + 1 < len(samples) and samples[j + 1][0] <= t + window:
            j += 1
        best = max(best, samples[j][1] - value)
    return best


def restarts(
    ep: EmulatorProcess,
    work: Path,
    fleet: int,
    env: dict[str, str],
    *,
    concurrencies: Sequence[int | None] = (None,),
    spreads: Sequence[float] = (RESTART_SPREAD,),
    shapes: Sequence[RestartShape] = RESTART_SHAPES,
) -> list[Restart]:
    """A restart per shape, concurrency and spread."""
    return [
        restart_scenario(ep, work, fleet, shape, env, concurrency=concurrency, spread=spread)
        for shape in shapes
        for spread in spreads
        for concurrency in concurrencies
    ]


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
    restarts: list[Restart]
    """Fleet restarts (kept apart from ``scenarios``: a restart of 10,000 pods needs more accesses than
    one minute's quota, so its RESOURCE_EXHAUSTED answers are expected; what is judged is what they cost)."""

    selections: SelectionResult | None = None
    """The fleet with selections (``bench.fleet.selections``), measured after the rest."""

    def find(self, prefix: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.title.startswith(prefix)), None)


def measure_restarts(
    quick: bool = False,
    concurrencies: Sequence[int | None] = (None,),
    spreads: Sequence[float] = (RESTART_SPREAD,),
) -> list[Restart]:
    """Only the fleet restarts (``python -m bench.fleet restart``), against an emulator of their own (no
    Pub/Sub: nothing is rotated)."""
    agents = fleet_size(quick)
    with shm_tmpdir("bench-fleet-") as work, emulator_process(write_seed(work / "seed.yaml")) as ep:
        return restarts(ep, work, agents, dict(os.environ), concurrencies=concurrencies, spreads=spreads)


def measure(quick: bool = False) -> Result:
    agents = fleet_size(quick)
    wall = QUICK_WALL_INTERVAL if quick else WALL_INTERVAL
    with events_world("bench-fleet-", TOPIC) as world:
        work, env = world.work, world.env
        ep = world.stack.enter_context(emulator_process(write_seed(work / "seed.yaml")))
        restarted = restarts(ep, work, agents, env)
        scenarios = [
            polling_scenario(ep, work, agents, 120.0, "poll every 2 min", env, wall),
            polling_scenario(ep, work, agents, 3600.0, "poll every 1 h", env, wall),
        ]
        if world.pubsub_host is not None:
            scenarios.append(events_scenario(ep, work, agents, quick, env))
        return Result(agents, scenarios, world.events_note, wall, restarted)
