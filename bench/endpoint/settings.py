"""What every process of the endpoint benchmark agrees on: the load's shape, the value served, the
watchers, the CPUs, the targets; and the one-JSON-line-on-stdout way a child reports to the benchmark.

Read by the server processes, the load generator, the watchers and the benchmark alike, so this module
imports nothing but the standard library (the bare server must not pay for anything of the agent's).
"""

from __future__ import annotations

import json
import sys
from typing import Any

CONNECTIONS = 32
DURATION_SECONDS = 5
WARMUP_SECONDS = 2
REPEATS = 7
"""Interleaved runs of every server: each figure is the median over the runs (with min-max), and each ratio
the median of the ratios to the bare handler's run of the same round."""
SECRETS = 10
VALUE_BYTES = 64
NAME = "bench-000"
"""The secret every request asks for."""
WATCHERS = 1000
WATCH_ROUNDS = 3
WATCH_WAIT = "60s"
WATCH_MAX_CONNECTIONS = WATCHERS + 64
"""``server.max_connections`` for the watcher run (the default, 128, is below 1,000)."""
SERVER_CPU, LOAD_CPU = 0, 1
RATIO_TARGET = 0.8
"""Requests/s of the agent's endpoint over the bare handler's: at least."""
CPU_RATIO_TARGET = 1.25
"""The server's CPU time per request over the bare handler's: at most."""
P99_TARGET_MS = 5.0
WAKE_TARGET_MS = 100.0
STARTUP_TIMEOUT = 30.0
WRK_INSTALL_HINT = "apt-get install -y wrk"


def value_of(index: int, version: int) -> bytes:
    return f"value-{index:03d}-v{version}-".encode().ljust(VALUE_BYTES, b"x")


def announce(ready: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
