"""The fleet benchmark's world: how many agents and secrets, the service's quotas and how they are scaled,
the compressed poll interval, the phases' lengths and the targets; the emulator's seed.

Every figure the fleet is run with is here, read by the driver, the workers and the tables alike (the
package docstring says why each has the value it has).
"""

from __future__ import annotations

import os
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


def secret_id(index: int) -> str:
    return f"fleet-{index:02d}"


def scaled_access_quota(agents: int) -> int:
    """The service's access quota for the share of ``REPRESENTED_PODS`` that ``agents`` stand for."""
    return round(SERVICE_ACCESS_PER_MINUTE * agents / REPRESENTED_PODS)


def write_seed(path: Path) -> Path:
    secrets = {secret_id(i): {"value": "initial", "topics": [TOPIC]} for i in range(SECRETS)}
    return emulator_seed(path, PROJECT, secrets)


def fleet_size(quick: bool) -> int:
    override = os.environ.get("BENCH_FLEET_AGENTS")
    if override:
        return int(override)
    return QUICK_AGENTS if quick else AGENTS
