"""The bootstrap's fan-out: at the default settings 50 secrets cost one round of latency, not two."""

from __future__ import annotations

import asyncio

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.config.schema import Config
from agent.core.model import Fetched, Snapshot, crc32c
from agent.core.store import SnapshotStore
from agent.sync import Syncer, SyncSettings

PROJECT = "test-project"


class CountingSource:
    """Answers every fetch after a short wait, and records the most fetches it had in flight at once."""

    name = "counting"

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0

    async def fetch(self, spec: SecretSpec) -> Fetched:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # every fetch that can start does, before any of them ends
        finally:
            self.in_flight -= 1
        return Fetched(name=spec.name, version="1", data=b"value", crc32c=crc32c(b"value"))

    async def current_version(self, spec: SecretSpec) -> str:
        return "1"

    async def close(self) -> None:
        pass


class NullSink:
    def write(self, snapshot: Snapshot) -> bool:
        return True


def specs(count: int) -> list[SecretSpec]:
    return [SecretSpec(name=f"s{i}", ref=parse_ref(f"s{i}", PROJECT)) for i in range(count)]


async def most_in_flight(count: int, settings: SyncSettings) -> int:
    source, wanted = CountingSource(), specs(count)
    syncer = Syncer(wanted, source, NullSink(), SnapshotStore(wanted), settings)
    report = await syncer.bootstrap(deadline=None)
    assert len(report.snapshot) == count
    assert not report.failures
    return source.most


async def test_fifty_secrets_are_all_in_flight_at_the_default_concurrency() -> None:
    assert Config().concurrency == SyncSettings().concurrency  # the library's default is the CLI's
    assert await most_in_flight(50, SyncSettings()) == 50


async def test_the_concurrency_bounds_the_fetches_in_flight() -> None:
    assert await most_in_flight(50, SyncSettings(concurrency=8)) == 8
    assert await most_in_flight(250, SyncSettings()) == SyncSettings().concurrency
