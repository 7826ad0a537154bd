"""``rotate`` across the simulated fleet: the real rotation tooling (``python -m agent rotate``) with a
rotation config whose ``fleet`` is the simulated one (``world.fleet_shares``: 200 pods at 900 access calls
per minute, so that the pacing, ``60 x size / access_per_minute``, is the 13.3 s of 10,000 pods at 45,000),
and when each new version was added (the emulator's ``create_time``), to time the fleet's convergence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import secret_manager_client
from bench.fleet.world import PROJECT


@dataclass(frozen=True)
class RotateRun:
    """One ``rotate`` process: its exit status, wall time, and when (monotonic) each secret's new version
    was added."""

    exit_code: int
    seconds: float
    started: float
    added: dict[str, tuple[int, float]]
    """Secret id -> (the version it added, when, on the monotonic clock)."""
    summary: dict[str, int]
    """``rotate``'s own count of results (rotated, failed, ...), from its JSON output."""


def rotation_config(path: Path, fleet: dict[str, object]) -> Path:
    """A rotation config for the project with the simulated fleet (``fleet.*`` settings of
    ``world.fleet_shares``): the typed secrets rotate with their default provider (symmetric)."""
    section = {key.split(".", 1)[1]: int(str(value)) for key, value in fleet.items()}
    sizes = {"size": section["size"], "access_per_minute": section["access_per_minute"]}
    path.write_text(yaml.safe_dump({"project": PROJECT, "fleet": sizes}))
    return path


def rotate(
    grpc_target: str, config: Path, targets: Sequence[str], fleet: dict[str, object], timeout: float
) -> RotateRun:
    """``python -m agent rotate TARGETS -c CONFIG --fleet-size N --access-per-minute M`` against the
    emulator; then the versions each rotation added, read back with the official client."""
    argv = [sys.executable, "-m", "agent", "rotate", *targets, "-c", str(config), "--endpoint", grpc_target]
    argv += [
        "--fleet-size",
        str(fleet["fleet.size"]),
        "--access-per-minute",
        str(fleet["fleet.access_per_minute"]),
    ]
    argv += ["--output", "json"]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - started
    (config.parent / "rotate.log").write_text(done.stdout + done.stderr)
    try:
        summary = {str(k): int(v) for k, v in json.loads(done.stdout)["summary"].items()}
    except (ValueError, KeyError, TypeError):
        summary = {"no JSON output, see rotate.log": 1}
    return RotateRun(done.returncode, seconds, started, added_versions(grpc_target), summary)


def added_versions(grpc_target: str) -> dict[str, tuple[int, float]]:
    """Per secret with more than one version, its newest version and when it was added (monotonic)."""
    offset = time.time() - time.monotonic()
    client = secret_manager_client(grpc_target)
    out: dict[str, tuple[int, float]] = {}
    try:
        for secret in client.list_secrets(request={"parent": f"projects/{PROJECT}"}):
            versions = list(client.list_secret_versions(request={"parent": secret.name}))
            newest = max(versions, key=lambda v: int(v.name.rsplit("/", 1)[-1]), default=None)
            if newest is None or newest.name.endswith("/versions/1"):
                continue
            number = int(newest.name.rsplit("/", 1)[-1])
            out[secret.name.rsplit("/", 1)[-1]] = (number, newest.create_time.timestamp() - offset)
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    return out
