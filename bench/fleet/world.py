"""The fleet benchmark's world: how many agents and secrets, the service's quotas and how they are scaled,
the compressed poll interval, the phases' lengths and the targets; the emulator's seed.

Every figure the fleet is run with is here, read by the driver, the workers and the tables alike (the
package docstring says why each has the value it has).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from testing.emulator_process import write_seed as emulator_seed

PROJECT = "bench-project"
TOPIC = f"projects/{PROJECT}/topics/secret-events"
AGENTS, QUICK_AGENTS = 200, 100
"""Agents in the fleet (``BENCH_FLEET_AGENTS`` overrides). 200 rather than more: see "the host" in the
package docstring."""
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


@dataclass(frozen=True)
class RestartShape:
    """A fleet restart: ``pods`` pods (of the real fleet) with ``secrets`` secrets each, restarting at random
    moments within ``RESTART_SPREAD``; the benchmark runs the share of them that ``AGENTS`` stand for."""

    pods: int
    secrets: int

    def agents(self, fleet: int) -> int:
        """Simulated agents for a benchmark fleet of ``fleet`` agents (which stands for REPRESENTED_PODS)."""
        return max(1, round(self.pods * fleet / REPRESENTED_PODS))

    def quota(self, fleet: int) -> int:
        """The access quota for the share of the real fleet those agents stand for."""
        return round(SERVICE_ACCESS_PER_MINUTE * self.agents(fleet) / self.pods)


RESTART_SHAPES = (RestartShape(REPRESENTED_PODS, SECRETS), RestartShape(REPRESENTED_PODS // 5, 50))
"""The same demand on the quota twice (100,000 accesses per restart against 90,000 per minute: the restart
cannot fit in one minute whatever the agent does): 10,000 pods with 10 secrets (DESIGN's fleet), and 2,000
pods with 50 (where the per-pod concurrency shapes each pod's burst: 50 calls in one round or two)."""
RESTART_SPREAD = 60.0
"""Seconds over which the pods restart (a rollout, a node pool upgrade: "within one minute")."""
RESTART_TIMEOUT = 600.0
"""Seconds the benchmark waits for every pod of a restart to be ready."""
KUBELET_BACKOFF_INITIAL, KUBELET_BACKOFF_MAX = 10.0, 300.0
"""The kubelet's restart back-off for a container that exited non-zero (an init container whose bootstrap
failed): 10 s, doubling, at most 5 minutes."""
SEED_SECRETS = max(shape.secrets for shape in RESTART_SHAPES)


def secret_id(index: int) -> str:
    return f"fleet-{index:02d}"


def scaled_access_quota(agents: int) -> int:
    """The service's access quota for the share of ``REPRESENTED_PODS`` that ``agents`` stand for."""
    return round(SERVICE_ACCESS_PER_MINUTE * agents / REPRESENTED_PODS)


def write_seed(path: Path) -> Path:
    secrets = {secret_id(i): {"value": "initial", "topics": [TOPIC]} for i in range(SEED_SECRETS)}
    return emulator_seed(path, PROJECT, secrets)


def fleet_size(quick: bool) -> int:
    override = os.environ.get("BENCH_FLEET_AGENTS")
    if override:
        return int(override)
    return QUICK_AGENTS if quick else AGENTS


# --------------------------------------------------------------------------------------------------
# Selections (``bench.fleet.selections``): every agent has SECRETS explicit secrets and one selection
# --------------------------------------------------------------------------------------------------

SELECTED = 10
"""Secrets labelled ``SELECT_LABEL`` (``payments-NN``), matched by every agent's selection."""
SELECT_NAME = "payments"
SELECT_LABEL = ("team", "payments")
SECRET_TYPE = "encryption-key"
"""The ``secret-type`` of the 10 explicit and the 10 selected secrets: ``rotate all`` rotates those 20."""
NEW_SECRET = "payments-new"
"""Created (labelled ``SELECT_LABEL``, untyped) during the steady window: every agent must deliver it."""
SERVICE_READS_SHARE, SERVICE_ACCESS_SHARE = 300, 45_000
"""The defaults of ``fleet.reads_per_minute`` and ``fleet.access_per_minute`` for the whole fleet."""
RESTART_COMPRESSION, QUICK_RESTART_COMPRESSION = 10.0, 10.0
"""A fleet restart (one simulated minute) and its listings, compressed: 1 simulated minute = 6 s."""
STEADY_COMPRESSION, QUICK_STEADY_COMPRESSION = 60.0, 120.0
"""The steady state with events: 1 simulated hour (the re-list and the safety poll) = 60 s (30 s quick).
Not more: the read quota is judged per simulated minute, which must stay long against how late a busy
worker's timers fire (at x360 a simulated minute was 0.17 s of wall time, and a worker stalled for a few
tenths of a second on the shared cores put three minutes' listings in one, and the emulator's per-minute
window refused them)."""
STEADY_INTERVALS, QUICK_STEADY_INTERVALS = 4.0, 3.0
"""Length of the steady window, in re-list intervals (simulated hours)."""
ROTATE_ALL, QUICK_ROTATE_ALL = 20, 4
"""Secrets ``rotate`` rotates across the fleet (20: ``rotate all``; quick: 4 named ones)."""
SELECTION_TIMEOUT = 400.0
"""Seconds of wall time a selection phase may take before the benchmark gives up."""


def selected_id(index: int) -> str:
    return f"{SELECT_NAME}-{index:02d}"


def selection_names() -> list[str]:
    """What every agent must hold: the explicit secrets and the selected ones (their local names)."""
    return [secret_id(i) for i in range(SECRETS)] + [selected_id(i) for i in range(SELECTED)]


def scaled_read_quota(agents: int) -> float:
    """The read quota (600/min) for the share of REPRESENTED_PODS that ``agents`` stand for (12 for 200)."""
    return SERVICE_READ_WRITE_PER_MINUTE * agents / REPRESENTED_PODS


def fleet_shares(agents: int) -> dict[str, object]:
    """The ``fleet`` settings of a simulated fleet of ``agents``: its size, and the shares of both quotas
    scaled by ``agents / REPRESENTED_PODS``, so that every duration the agent derives from them (start
    jitter, re-list interval, event spread, the rotator's pacing) equals the one of the 10,000 pods."""
    scale = agents / REPRESENTED_PODS
    return {
        "fleet.size": str(agents),
        "fleet.reads_per_minute": str(max(1, round(SERVICE_READS_SHARE * scale))),
        "fleet.access_per_minute": str(max(1, round(SERVICE_ACCESS_SHARE * scale))),
    }


def write_selection_seed(path: Path) -> Path:
    """The explicit ``fleet-NN`` and the selected ``payments-NN`` secrets, all typed (``rotate all``) and
    publishing to ``TOPIC``."""
    typed = {"secret-type": SECRET_TYPE}
    secrets: dict[str, object] = {
        secret_id(i): {"value": "initial", "topics": [TOPIC], "labels": typed} for i in range(SECRETS)
    }
    for i in range(SELECTED):
        labels = {**typed, SELECT_LABEL[0]: SELECT_LABEL[1]}
        secrets[selected_id(i)] = {"value": "initial", "topics": [TOPIC], "labels": labels}
    return emulator_seed(path, PROJECT, secrets)


def compressed_settings(compression: float, *, events: bool) -> dict[str, object]:
    """The agent's durations for a world whose time runs ``compression`` times faster: each is the value
    the agent derives (``auto``) or defaults to for the 10,000-pod fleet, divided by ``compression``: the
    start jitter (600 s, the cap), the re-list interval (1 h with events, 2,000 s without), the poll
    interval (5 min; with events the 1 h safety poll) and the retry backoff (0.5 s doubling to 30 s).
    The event delay is not compressed: events are measured in real time."""
    from agent.config import Config, DiscoveryConfig, FleetConfig

    fleet, discovery, defaults = FleetConfig(size=REPRESENTED_PODS), DiscoveryConfig(), Config()
    seconds = {
        "discovery.start_jitter": discovery.start_jitter_seconds(fleet),
        "discovery.relist_interval": discovery.relist_seconds(fleet, events),
        "poll_interval": defaults.poll_interval,
        "gcp.backoff_initial": defaults.gcp.backoff_initial,
        "gcp.backoff_max": defaults.gcp.backoff_max,
    }
    if events:
        seconds["events.poll_interval"] = SAFETY_POLL
    return {path: f"{value / compression:.6g}s" for path, value in seconds.items()}
