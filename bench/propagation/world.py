"""The propagation benchmark's world: the secret and its values, the agents' settings, their config files
and the emulator's seed.

Everything here is fixed before the run starts; the other modules (``inotify``, ``agents``, ``run``,
``report``) read these names, so one change of a setting (a poll interval, the number of rotations) reaches
the measurement and the table alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from testing.emulator_process import EmulatorProcess
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
LAST_POLL_SLACK = 30.0

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


def write_seed(path: Path, with_topic: bool) -> Path:
    secret: dict[str, Any] = {"value": value(0)}
    if with_topic:
        secret["topics"] = [TOPIC]
    return emulator_seed(path, PROJECT, {SECRET_ID: secret})
