"""Overlapping checks finish in any order; a secret must never go back to what an older read saw.

An event-triggered check and the safety poll (or a refresh and a poll) can both be reading ``latest``; the
one that started first may finish last. Here the first check is held, deterministically, after it has read
version 2 until a second check has read and committed version 3.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched
from agent.core.store import SnapshotStore
from agent.sinks.snapshot import SnapshotSink
from agent.sources.gcp import GcpSource
from agent.sync import Syncer, SyncSettings
from agent_emulator.server import EmulatorEndpoints
from tests.conftest import grpc_client
from tests.e2e.conftest import PROJECT, Upstream

DB = SecretSpec(name="db", ref=parse_ref(f"projects/{PROJECT}/secrets/db"))


class HeldSource(GcpSource):
    """The real Secret Manager source; ``hold_next()`` makes the next fetch wait, after it has read its
    value from the emulator, until ``release()``."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint=endpoint)
        self._armed = False
        self.read = asyncio.Event()
        self._released = asyncio.Event()

    def hold_next(self) -> None:
        self._armed = True

    def release(self) -> None:
        self._released.set()

    async def fetch(self, spec: SecretSpec) -> Fetched:
        hold, self._armed = self._armed, False
        fetched = await super().fetch(spec)
        if hold:
            self.read.set()
            await self._released.wait()
        return fetched


@pytest.fixture
async def rig(
    emulator: EmulatorEndpoints, tmp_path: Path
) -> AsyncIterator[tuple[Upstream, HeldSource, Syncer]]:
    upstream = Upstream(emulator, grpc_client(emulator.grpc_target))
    upstream.create("db")
    upstream.add("db", "db-1")
    source = HeldSource(emulator.grpc_target)
    syncer = Syncer(
        [DB], source, SnapshotSink(tmp_path / "out", [DB], None), SnapshotStore([DB]), SyncSettings()
    )
    await syncer.bootstrap(deadline=None)
    yield upstream, source, syncer
    await source.close()
    upstream.client.transport.close()


async def test_a_check_overtaken_by_a_newer_one_does_not_put_the_older_version_back(
    rig: tuple[Upstream, HeldSource, Syncer], tmp_path: Path
) -> None:
    upstream, source, syncer = rig
    upstream.add("db", "db-2")
    source.hold_next()
    slow = asyncio.create_task(syncer.check())
    await asyncio.wait_for(source.read.wait(), 10)  # the slow check has read version 2

    upstream.add("db", "db-3")
    assert await syncer.check()  # a later check reads and commits version 3
    source.release()
    assert await slow  # the slow one succeeded too, but its read is older than what is served

    served = syncer.store.snapshot.get("db")
    assert served is not None
    assert (served.version, served.data) == ("3", b"db-3")
    assert (tmp_path / "out" / "db").read_bytes() == b"db-3"


async def test_an_alias_moved_back_to_an_older_version_is_followed(
    rig: tuple[Upstream, HeldSource, Syncer], tmp_path: Path
) -> None:
    """Only reads overtaken by newer reads are dropped: a smaller version number is not a rollback when the
    secret's owner moved an alias back to it."""
    upstream, source, syncer = rig
    upstream.add("db", "db-2")
    alias = SecretSpec(name="prod", ref=parse_ref(f"projects/{PROJECT}/secrets/db/versions/prod"))
    syncer = Syncer(
        [alias],
        source,
        SnapshotSink(tmp_path / "alias", [alias], None),
        SnapshotStore([alias]),
        SyncSettings(),
    )
    point_alias(upstream, "prod", 2)
    await syncer.bootstrap(deadline=None)
    point_alias(upstream, "prod", 1)

    assert await syncer.check()

    served = syncer.store.snapshot.get("prod")
    assert served is not None
    assert (served.version, served.data) == ("1", b"db-1")
    assert (tmp_path / "alias" / "prod").read_bytes() == b"db-1"


def point_alias(upstream: Upstream, alias: str, version: int) -> None:
    upstream.client.update_secret(
        request={
            "secret": {"name": Upstream.ref("db"), "version_aliases": {alias: version}},
            "update_mask": {"paths": ["version_aliases"]},
        }
    )


# -- forced rounds: coalesced and rate-limited ---------------------------------------------------------


@contextlib.asynccontextmanager
async def polling(
    emulator: EmulatorEndpoints, tmp_path: Path, refresh_min_interval: float
) -> AsyncIterator[tuple[Upstream, HeldSource, Syncer]]:
    """A bootstrapped Syncer whose poll loop runs (and never polls on its own: 1 h), counters reset."""
    upstream = Upstream(emulator, grpc_client(emulator.grpc_target))
    upstream.create("db")
    upstream.add("db", "db-1")
    source = HeldSource(emulator.grpc_target)
    settings = SyncSettings(poll_interval=3600, poll_jitter=0, refresh_min_interval=refresh_min_interval)
    syncer = Syncer([DB], source, SnapshotSink(tmp_path / "out", [DB], None), SnapshotStore([DB]), settings)
    await syncer.bootstrap(deadline=None)
    upstream.reset_counters()
    loop = asyncio.create_task(syncer.poll())
    try:
        yield upstream, source, syncer
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await source.close()
        upstream.client.transport.close()


async def served_version(syncer: Syncer, version: str, within: float = 10.0) -> None:
    async def reached() -> None:
        while (item := syncer.store.snapshot.get("db")) is None or item.version != version:
            await syncer.store.wait_for_generation(syncer.store.generation, within)

    await asyncio.wait_for(reached(), within)


async def test_refreshes_while_a_forced_round_runs_queue_exactly_one_more(
    emulator: EmulatorEndpoints, tmp_path: Path
) -> None:
    async with polling(emulator, tmp_path, refresh_min_interval=0) as (upstream, source, syncer):
        source.hold_next()
        assert syncer.request_refresh() is None
        await asyncio.wait_for(source.read.wait(), 10)  # round 1 is in flight, held after its read
        assert all(syncer.request_refresh() is None for _ in range(100))  # they all join one queued round
        for _ in range(100):
            syncer.refresh_now()  # SIGHUP: the same queued round
        upstream.add("db", "db-2")
        source.release()

        await served_version(syncer, "2")  # the queued round read after the requests
        assert upstream.calls("AccessSecretVersion") == 2, "one round in flight and one queued, no more"


async def test_a_refresh_too_soon_after_a_forced_round_is_refused_and_a_sighup_is_deferred(
    emulator: EmulatorEndpoints, tmp_path: Path
) -> None:
    async with polling(emulator, tmp_path, refresh_min_interval=3600) as (upstream, _source, syncer):
        upstream.add("db", "db-2")
        assert syncer.request_refresh() is None
        await served_version(syncer, "2")

        retry_after = syncer.request_refresh()
        assert retry_after is not None
        assert 3590 < retry_after <= 3600, "the seconds left until the next forced round may start"
        syncer.refresh_now()  # a SIGHUP now is not refused: a round is queued for when it may start
        assert syncer.request_refresh() is None, "a request while a round is queued joins it"
        assert upstream.calls("AccessSecretVersion") == 1
