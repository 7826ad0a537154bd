"""The rig the metrics and probes tests share: a Syncer on the emulator, a store on a settable clock,
Metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.cloud import secretmanager_v1
from prometheus_client import CollectorRegistry

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.retry import Backoff
from agent.core.store import SnapshotStore
from agent.observe.metrics import Metrics
from agent.sinks.snapshot import SnapshotSink
from agent.sources.gcp import GcpSource
from agent.sync import Syncer, SyncSettings
from agent_emulator.server import EmulatorEndpoints

PROJECT = "metrics-tests"
CANARY = "canary-metrics-5f0c2e-if-you-read-this-it-leaked"
"""The value of secret ``api``: it must never appear in any label or sample."""
MAX_STALENESS = 60.0
FAST = Backoff(initial=0.001, maximum=0.005)


class Clock:
    """A settable wall clock for the SnapshotStore (Unix seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(name: str, secret_id: str, version: str = "latest") -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(f"projects/{PROJECT}/secrets/{secret_id}/versions/{version}"))


def create_secret(client: secretmanager_v1.SecretManagerServiceClient, secret_id: str, *values: str) -> None:
    client.create_secret(
        request={
            "parent": f"projects/{PROJECT}",
            "secret_id": secret_id,
            "secret": {"replication": {"automatic": {}}},
        }
    )
    for value in values:
        add_version(client, secret_id, value)


def add_version(client: secretmanager_v1.SecretManagerServiceClient, secret_id: str, value: str) -> None:
    client.add_secret_version(
        request={"parent": f"projects/{PROJECT}/secrets/{secret_id}", "payload": {"data": value.encode()}}
    )


def set_faults(emulator: EmulatorEndpoints, faults: Mapping[str, Mapping[str, object]]) -> None:
    """Replace the emulator's fault rules through its admin API."""
    request = urllib.request.Request(
        emulator.admin_url + "/faults",
        data=json.dumps({"faults": faults}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def clear_faults(emulator: EmulatorEndpoints) -> None:
    set_faults(emulator, {})


@dataclass
class Rig:
    """A Syncer wired to the emulator, a SnapshotSink, a store on a fake clock, and Metrics."""

    syncer: Syncer
    store: SnapshotStore
    metrics: Metrics
    clock: Clock
    output: Path

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def fetches(self, secret: str, result: str) -> float | None:
        return self.sample("secrets_agent_fetches_total", secret=secret, result=result)

    async def bootstrap(self) -> None:
        report = await self.syncer.bootstrap(deadline=asyncio.get_running_loop().time() + 30)
        assert not report.failures, report.failures


@contextlib.asynccontextmanager
async def syncer_rig(
    emulator: EmulatorEndpoints,
    specs: Sequence[SecretSpec],
    output: Path,
    *,
    settings: SyncSettings | None = None,
    max_staleness: float | None = MAX_STALENESS,
    **syncer_options: object,
) -> AsyncIterator[Rig]:
    """A Rig over ``specs`` (the secrets must exist in the emulator); the source is closed afterwards."""
    clock = Clock()
    store = SnapshotStore(specs, clock=clock)
    metrics = Metrics(CollectorRegistry(), store=store, max_staleness=max_staleness)
    source = GcpSource(endpoint=emulator.grpc_target, call_timeout=5.0)
    syncer = Syncer(
        specs,
        source,
        SnapshotSink(output, specs, None),
        store,
        settings or SyncSettings(backoff=FAST),
        metrics=metrics,
        **syncer_options,  # type: ignore[arg-type]
    )
    try:
        yield Rig(syncer, store, metrics, clock, output)
    finally:
        await source.close()


SPECS = (spec("db", "db-password"), spec("api", "api-key"))


@pytest.fixture
async def rig(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> AsyncIterator[Rig]:
    """``db`` at version 2 and ``api`` (the canary) at version 1, not fetched yet."""
    create_secret(client, "db-password", "db-v1", "db-v2")
    create_secret(client, "api-key", CANARY)
    async with syncer_rig(emulator, SPECS, tmp_path / "out") as r:
        yield r
