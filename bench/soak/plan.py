"""The soak's schedule, drawn once from ``--seed``: what goes wrong when, and which secrets rotate when.

Three parts of a run of duration *D* (times in seconds from the start, the agent already serving):

* **chaos**, ``[0, 0.5 D)``: fault phases, SIGKILLs of the agent (restarted after a short delay, as a kubelet
  would), Pub/Sub outages (stopped, restarted on the same port), the output tmpfs filled up and freed;
* **memory window**, ``[0.5 D, 0.9 D)``: the same faults, rotations and disk fills, but no kills: one agent
  process lives through it, and its RSS samples are fitted to a line (a restart resets memory, so a trend
  only means something over one process's life);
* **convergence**, from ``0.9 D``: rotations and faults stop; the soak times how long the agent takes to
  serve every secret's latest version in its files and on its endpoint, and to be ready; the readers go on
  until *D* (longer only if convergence takes longer).

Fault phases alternate with calm phases, the kinds in a shuffled order per cycle so that every kind comes up
even in a short run. The last phase before convergence is always a full outage (every access UNAVAILABLE)
while rotations go on, so the agent is behind when faults stop and the convergence time is the time it
takes to catch up, not a formality. A kill never falls near a disk fill: an agent starting on a full volume
cannot write its endpoint token and exits, which would be a test of the schedule, not of the agent.

Everything here is a pure function of (duration, seed, secrets): the same seed replays the same schedule.
The agent's own jitter and the machine's timing are not under the seed's control.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from testing.soak_values import SecretSet

CHAOS_FRACTION = 0.5
FAULTS_STOP_FRACTION = 0.9
ROTATION_PERIOD = 1.0
"""Seconds between rotation ticks; each tick rotates one pair (both secrets) and one single secret."""
KILL_SPACING = 30.0
"""About one SIGKILL per this many seconds of chaos (at least two)."""
PUBSUB_SPACING = 120.0
"""About one Pub/Sub outage per this many seconds of chaos (at least one)."""
DISK_SPACING = 60.0
"""About one disk fill per this many seconds of the run before convergence (at least one)."""
RESTART_DELAY = (0.2, 1.5)
"""Seconds between a SIGKILL and the restart (a kubelet restarts a crashed container after a moment)."""
KILL_CLEAR_OF_DISK = (4.0, 0.5)
"""No kill within this many seconds before a disk fill starts / after it ends (restart delay + start-up
until the token is written fit in the first)."""
MIN_KILL_GAP = 3.0

FAULT_KINDS: dict[str, dict[str, object]] = {
    "unavailable": {"faults": {"AccessSecretVersion": {"unavailable": 0.5}}},
    "resource_exhausted": {"faults": {"AccessSecretVersion": {"resource_exhausted": 0.5}}},
    "latency_spike": {"faults": {"AccessSecretVersion": {"latency_ms": 200, "jitter_ms": 2500}}},
    "corrupt_crc": {"faults": {"AccessSecretVersion": {"corrupt_crc": 0.5}}},
    "quota": {"quotas": {"access_per_minute": 3, "read_per_minute": 600, "write_per_minute": 100_000}},
    "outage": {"faults": {"AccessSecretVersion": {"unavailable": 1.0}}},
}
"""The emulator's fault config per phase kind (admin API ``PUT /faults``). Only AccessSecretVersion is
faulted: the soak's own AddSecretVersion calls (the operator rotating) must go through. The latency spike
reaches past the agent's 2 s call timeout (DEADLINE_EXCEEDED); the quota allows 3 accesses a minute,
fewer than one phase's rotation ticks ask for (3 secrets a tick), so that even the shortest phase of a 30 s
run meets RESOURCE_EXHAUSTED for certain, not by the luck of the ``resource_exhausted`` phase's coin."""


@dataclass(frozen=True)
class Phase:
    start: float
    end: float
    kind: str
    """A key of FAULT_KINDS, or "calm"."""


@dataclass(frozen=True)
class Window:
    start: float
    end: float


@dataclass(frozen=True)
class Kill:
    at: float
    restart_after: float


@dataclass(frozen=True)
class Tick:
    at: float
    secrets: tuple[str, ...]
    """Rotated in this order, back to back (a pair's user before its password)."""


@dataclass(frozen=True)
class Plan:
    duration: float
    seed: int
    chaos_end: float
    faults_stop: float
    phases: tuple[Phase, ...]
    kills: tuple[Kill, ...]
    pubsub_outages: tuple[Window, ...]
    disk_fills: tuple[Window, ...]
    ticks: tuple[Tick, ...]

    def most_rotated(self, names: tuple[str, ...]) -> str:
        """The secret of ``names`` rotated most often (the long-poll follows it: it must see rotations)."""
        counts = {name: sum(name in tick.secrets for tick in self.ticks) for name in names}
        return max(names, key=lambda name: counts[name])

    def to_json(self, *, ticks: bool = False) -> dict[str, object]:
        """The schedule as data (seconds rounded to 10 ms); ``ticks``: every rotation tick, not just their
        number."""
        document: dict[str, object] = {
            "duration_s": self.duration,
            "seed": self.seed,
            "chaos_end_s": round(self.chaos_end, 2),
            "faults_stop_s": round(self.faults_stop, 2),
            "phases": [[round(p.start, 2), round(p.end, 2), p.kind] for p in self.phases],
            "kills": [[round(k.at, 2), round(k.restart_after, 2)] for k in self.kills],
            "pubsub_outages": [[round(w.start, 2), round(w.end, 2)] for w in self.pubsub_outages],
            "disk_fills": [[round(w.start, 2), round(w.end, 2)] for w in self.disk_fills],
            "rotation_ticks": len(self.ticks),
        }
        if ticks:
            document["ticks"] = [[round(t.at, 2), list(t.secrets)] for t in self.ticks]
        return document


def make_plan(duration: float, seed: int, secrets: SecretSet, *, disk: bool = True) -> Plan:
    """The schedule of one run; ``disk=False`` when no small tmpfs could be mounted (no fills)."""
    if duration < 20:
        raise ValueError("the soak needs at least 20 s (chaos, a memory window and convergence)")
    rng = random.Random(seed)  # a replayable schedule, not cryptography
    chaos_end = duration * CHAOS_FRACTION
    faults_stop = duration * FAULTS_STOP_FRACTION
    phases = _phases(rng, duration, faults_stop)
    outages = _windows(
        rng, chaos_end * 0.1, chaos_end, max(1, round(chaos_end / PUBSUB_SPACING)), (2.0, 15.0)
    )
    fills = (
        _windows(rng, 1.0, faults_stop - 1.0, max(1, round(faults_stop / DISK_SPACING)), (3.0, 10.0))
        if disk
        else ()
    )
    kills = _kills(rng, chaos_end, fills)
    ticks = _ticks(rng, faults_stop, secrets)
    return Plan(duration, seed, chaos_end, faults_stop, phases, kills, outages, fills, ticks)


def _phases(rng: random.Random, duration: float, until: float) -> tuple[Phase, ...]:
    base = min(15.0, max(1.5, duration / 40))
    final_outage = until - max(3.0, base)
    phases: list[Phase] = []
    t = 0.0
    while t < final_outage:
        kinds = list(FAULT_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            for name in (kind, "calm"):
                length = rng.uniform(0.6 * base, 1.4 * base)
                end = min(final_outage, t + length)
                if end > t:
                    phases.append(Phase(t, end, name))
                t = end
    phases.append(Phase(final_outage, until, "outage"))
    return tuple(phases)


def _windows(
    rng: random.Random, begin: float, end: float, count: int, length: tuple[float, float]
) -> tuple[Window, ...]:
    """``count`` windows, one in each equal slot of [begin, end), each at most a third of its slot long."""
    slot = (end - begin) / count
    windows = []
    for k in range(count):
        size = rng.uniform(length[0], max(length[0], min(length[1], slot / 3)))
        size = min(size, slot * 0.8)
        start = begin + k * slot + rng.uniform(0, max(0.0, slot - size))
        windows.append(Window(start, start + size))
    return tuple(windows)


def _kills(rng: random.Random, chaos_end: float, fills: tuple[Window, ...]) -> tuple[Kill, ...]:
    wanted = max(2, round(chaos_end / KILL_SPACING))
    before, after = KILL_CLEAR_OF_DISK

    def allowed(t: float, chosen: list[float]) -> bool:
        clear_of_disk = all(not (w.start - before <= t <= w.end + after) for w in fills)
        return clear_of_disk and all(abs(t - other) >= MIN_KILL_GAP for other in chosen)

    chosen: list[float] = []
    for _ in range(2000):  # rejection sampling; a short chaos part may fit fewer than wanted
        if len(chosen) == wanted:
            break
        t = rng.uniform(1.0, chaos_end - 1.0)
        if allowed(t, chosen):
            chosen.append(t)
    return tuple(Kill(t, rng.uniform(*RESTART_DELAY)) for t in sorted(chosen))


def _ticks(rng: random.Random, until: float, secrets: SecretSet) -> tuple[Tick, ...]:
    ticks = []
    t = ROTATION_PERIOD / 2
    while t < until:
        pair = secrets.pairs[rng.randrange(len(secrets.pairs))]
        chosen = pair + ((secrets.singles[rng.randrange(len(secrets.singles))],) if secrets.singles else ())
        ticks.append(Tick(t, chosen))
        t += ROTATION_PERIOD
    return tuple(ticks)
