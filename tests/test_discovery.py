"""Discovery (``agent.discovery``) with a lister and a syncer of the test's: where it starts from (known ids,
the ``.selection`` record, a listing after the start jitter), how it follows events and listings, the grace
period before a removal, collisions, backoff on a used-up quota, and the record itself (atomic, never
through a link). The real pipeline (GcpSource, the Syncer, Pub/Sub) is in tests/e2e/test_select*.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import stat
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import SELECTION_FILE_NAME, DiscoveryConfig, FleetConfig, SecretSpec, SelectSpec
from agent.config.refs import parse_ref
from agent.core.retry import Backoff
from agent.discovery import (
    Discovery,
    DiscoverySettings,
    SelectionRecord,
    fingerprint,
    read_state,
    write_state,
)
from agent.errors import PermanentSourceError, TransientSourceError
from agent.sources.events import SecretEvent
from agent.sources.listing import ProjectNames
from agent.sources.selection import SecretListing

PROJECT = "discovery-project"
PAYMENTS = SelectSpec(name="payments", project=PROJECT, labels=(("app", "payments"),), env_prefix="PAY_")
FAST = Backoff(0.01, 0.05)


def listing(secret_id: str, **labels: str) -> SecretListing:
    return SecretListing(PROJECT, None, secret_id, labels)


def explicit(name: str, secret: str) -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(f"projects/{PROJECT}/secrets/{secret}"), env=name.upper())


@dataclass
class World:
    """What the lister returns (or raises), and what the syncer was asked."""

    secrets: list[SecretListing] = field(default_factory=list)
    fail: list[Exception] = field(default_factory=list)
    listings: int = 0
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    specs: dict[str, SecretSpec] = field(default_factory=dict)

    async def lister(self, select: SelectSpec) -> list[SecretListing]:
        self.listings += 1
        if self.fail:
            raise self.fail.pop(0)
        return list(self.secrets)

    async def add_specs(
        self,
        specs: Sequence[SecretSpec],
        deadline: float | None = None,
        *,
        origins: Mapping[str, str] | None = None,
    ) -> None:
        assert not {spec.name for spec in specs} & set(self.specs), "add_specs refuses a name that exists"
        assert origins is not None
        assert set(origins) == {spec.name for spec in specs}
        self.calls.append(("add", sorted(spec.name for spec in specs)))
        self.specs.update({spec.name: spec for spec in specs})

    async def remove_specs(self, names: Collection[str], *, reason: str) -> None:
        self.calls.append(("remove", sorted(names), reason))
        for name in names:
            del self.specs[name]

    async def check(self, names: Collection[str] | None = None) -> bool:
        self.calls.append(("check", sorted(names or ())))
        return True

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def settings(**discovery: Any) -> DiscoverySettings:
    values: dict[str, Any] = {"grace_period": 0.3, "start_jitter": 0.0, "relist_interval": 3600.0}
    values.update(discovery)
    return DiscoverySettings(discovery=DiscoveryConfig(**values), fleet=FleetConfig(), backoff=FAST)


async def until(condition: Callable[[], object], within: float = 5.0, what: str = "a condition") -> None:
    """Wait (polling every 5 ms) until ``condition()`` is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(discovery: Discovery, world: World) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(discovery.run(world))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(world: World, tmp_path: Path | None = None, *selections: SelectSpec, **kwargs: Any) -> Discovery:
    return Discovery(
        list(selections) or [PAYMENTS],
        kwargs.pop("explicit", []),
        world.lister,
        kwargs.pop("settings", settings()),
        state_dir=tmp_path,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------
# Where it starts
# --------------------------------------------------------------------------------------------------


async def test_known_ids_start_without_listing_and_the_first_relist_comes_within_an_interval(
    tmp_path: Path,
) -> None:
    world = World([listing("payments-db", app="payments")])
    known = SelectSpec(
        name="payments",
        project=PROJECT,
        labels=(("app", "payments"),),
        known=("payments-db",),
        known_at=time.time(),
    )
    discovery = make(world, tmp_path, known, settings=settings(relist_interval=0.5))
    specs = discovery.start()
    assert [(spec.name, spec.env, str(spec.ref)) for spec in specs] == [
        ("payments-db", "PAYMENTS_DB", f"projects/{PROJECT}/secrets/payments-db/versions/latest")
    ]
    assert discovery.to_list == []
    world.specs = {spec.name: spec for spec in specs}  # the bootstrap's
    async with running(discovery, world):
        assert world.listings == 0  # not at start
        await until(lambda: world.listings == 1, within=2.0, what="the safety re-list")
    assert world.calls == []  # the listing found what was known: nothing to add or remove


def test_a_fleet_started_from_one_listing_spreads_its_first_relists_over_an_interval() -> None:
    # The webhook resolved the selection once for every pod: they all start with one known_at. Planned one
    # interval after it, the whole fleet would re-list within minutes of each other.
    known_at = 1_000_000.0
    known = SelectSpec(
        name="payments",
        project=PROJECT,
        labels=(("app", "payments"),),
        known=("payments-db",),
        known_at=known_at,
    )
    dues = []
    for pod in range(1000):
        discovery = Discovery(
            [known],
            [],
            World([]).lister,
            settings(relist_interval=3600.0),
            rng=random.Random(pod),
            clock=lambda: known_at + 30.0,  # the pods start half a minute after the webhook's listing
            monotonic=lambda: 0.0,
        )
        discovery.start()
        dues.append(discovery._first_due("payments"))
    assert min(dues) >= 0.0
    assert max(dues) <= 3600.0
    per_tenth = Counter(int(due // 360.0) for due in dues)
    assert max(per_tenth.values()) < 140  # 100 in each tenth of the interval, give or take chance


async def test_no_candidates_list_after_the_start_jitter_and_add_once(tmp_path: Path) -> None:
    world = World(
        [
            listing("payments-db", app="payments"),
            listing("other", app="x"),
            listing("payments-api", app="payments"),
        ]
    )
    discovery = make(world, tmp_path)
    assert discovery.start() == []
    assert discovery.to_list == ["payments"]
    async with running(discovery, world):
        await until(lambda: world.calls, what="the secrets added")
    assert world.calls == [("add", ["payments-api", "payments-db"])]  # one add_specs: one swap
    record = read_state(tmp_path)["payments"]
    assert record.matched == ("payments-api", "payments-db")
    assert record.listed_at is not None
    assert abs(record.listed_at - time.time()) < 5
    assert record.fingerprint == fingerprint(PAYMENTS)


async def test_the_record_is_adopted_at_restart_and_no_listing_is_made(tmp_path: Path) -> None:
    write_state(tmp_path, {"payments": SelectionRecord(fingerprint(PAYMENTS), time.time(), ("payments-db",))})
    world = World()
    discovery = make(world, tmp_path)
    assert [spec.name for spec in discovery.start()] == ["payments-db"]
    assert discovery.to_list == []
    async with running(discovery, world):
        await asyncio.sleep(0.1)
    assert world.listings == 0


async def test_a_record_of_another_selection_or_a_link_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = SelectSpec(name="payments", project=PROJECT, labels=(("app", "billing"),))
    write_state(tmp_path, {"payments": SelectionRecord(fingerprint(other), time.time(), ("billing-db",))})
    assert make(World(), tmp_path).start() == []

    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(
        json.dumps(
            {
                "format": 1,
                "selections": {
                    "payments": {"fingerprint": fingerprint(PAYMENTS), "listed_at": 1.0, "matched": ["evil"]}
                },
            }
        )
    )
    (tmp_path / SELECTION_FILE_NAME).unlink()
    (tmp_path / SELECTION_FILE_NAME).symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        discovery = make(World(), tmp_path)
        assert discovery.start() == []
    assert discovery.to_list == ["payments"]
    assert any("symbolic link" in record.getMessage() for record in caplog.records)

    # Writing replaces the link; the file it pointed at is left as it was.
    discovery.save()
    assert not (tmp_path / SELECTION_FILE_NAME).is_symlink()
    assert json.loads(elsewhere.read_text())["selections"]["payments"]["matched"] == ["evil"]
    assert stat.S_IMODE(os.lstat(tmp_path / SELECTION_FILE_NAME).st_mode) == 0o600


def test_a_record_that_is_not_ours_is_not_used(tmp_path: Path) -> None:
    for content in ("not json", "[]", '{"format": 2, "selections": {}}', '{"format": 1, "selections": []}'):
        (tmp_path / SELECTION_FILE_NAME).write_text(content)
        assert read_state(tmp_path) == {}
    (tmp_path / SELECTION_FILE_NAME).write_text(
        '{"format": 1, "selections": {"a": {"fingerprint": "f", "listed_at": "x", "matched": []},'
        ' "b": {"fingerprint": "f", "listed_at": null, "matched": [1]},'
        ' "c": {"fingerprint": "f", "listed_at": 5, "matched": ["s"]}}}'
    )
    assert read_state(tmp_path) == {"c": SelectionRecord("f", 5.0, ("s",))}


def test_the_fresher_of_known_ids_and_the_record_wins(tmp_path: Path) -> None:
    known = SelectSpec(
        name="payments", project=PROJECT, labels=(("app", "payments"),), known=("old",), known_at=100.0
    )
    write_state(tmp_path, {"payments": SelectionRecord(fingerprint(known), 200.0, ("new",))})
    assert [spec.name for spec in make(World(), tmp_path, known).start()] == ["new"]
    later = SelectSpec(
        name="payments", project=PROJECT, labels=(("app", "payments"),), known=("old",), known_at=300.0
    )
    assert [spec.name for spec in make(World(), tmp_path, later).start()] == ["old"]


# --------------------------------------------------------------------------------------------------
# Listings that fail
# --------------------------------------------------------------------------------------------------


def exhausted() -> TransientSourceError:
    return TransientSourceError(
        f"projects/{PROJECT}: RESOURCE_EXHAUSTED: Quota exceeded", code="RESOURCE_EXHAUSTED", ref=PROJECT
    )


async def test_a_used_up_quota_is_retried_with_backoff_and_logged_once_per_burst(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World([listing("payments-db", app="payments")], fail=[exhausted() for _ in range(5)])
    discovery = make(world, tmp_path)
    discovery.start()
    with caplog.at_level(logging.INFO, logger="agent.discovery"):
        async with running(discovery, world):
            await until(lambda: world.calls, what="the listing that works again")
    assert world.listings == 6
    assert world.calls == [("add", ["payments-db"])]
    failed = [r.getMessage() for r in caplog.records if "listing failed" in r.getMessage()]
    assert len(failed) == 1, failed
    assert "RESOURCE_EXHAUSTED" in failed[0]
    assert any("works again after 5 failed attempts" in r.getMessage() for r in caplog.records)


async def test_a_failed_listing_removes_nothing(tmp_path: Path) -> None:
    world = World([listing("payments-db", app="payments")])
    discovery = make(world, tmp_path, settings=settings(relist_interval=0.05, grace_period=0.0))
    discovery.start()
    async with running(discovery, world):
        await until(lambda: world.calls, what="the first listing")
        world.fail = [exhausted(), PermanentSourceError("no", code="PERMISSION_DENIED")] * 3
        await until(lambda: not world.fail, what="the failed listings")
        await asyncio.sleep(0.1)
    assert world.calls == [("add", ["payments-db"])]


async def test_list_now_retries_until_the_deadline_and_reports_what_failed() -> None:
    world = World([listing("payments-db", app="payments")], fail=[exhausted(), exhausted()])
    discovery = make(world)
    discovery.start()
    failures = await discovery.list_now(deadline=time.monotonic() + 5)
    assert failures.errors == {}
    assert [spec.name for spec in discovery.resolution().all_specs()] == ["payments-db"]

    world = World(fail=[exhausted() for _ in range(1000)])
    discovery = make(world)
    discovery.start()
    failures = await discovery.list_now(deadline=time.monotonic() + 0.3)
    # The last error, or (when a retry's sleep overran the deadline on a busy machine) the deadline's.
    assert failures.errors["payments"].code in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


# --------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------


def event(kind: str, secret_id: str, version: str | None = None) -> SecretEvent:
    return SecretEvent(kind, f"projects/{PROJECT}/secrets/{secret_id}", version)


async def test_events_add_at_once_and_remove_after_the_grace_period(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World()
    discovery = make(world, tmp_path, settings=settings(grace_period=0.4))
    discovery.start()
    with caplog.at_level(logging.INFO, logger="agent.discovery"):
        async with running(discovery, world):
            await until(lambda: world.listings == 1, what="the first listing")
            discovery.on_secret(event("SECRET_CREATE", "new"), listing("new", app="payments"))
            await until(lambda: world.calls, what="the new secret added")
            assert world.calls == [("add", ["new"])]

            discovery.on_secret(event("SECRET_UPDATE", "new"), listing("new", app="other"))
            relabelled = time.monotonic()
            await until(lambda: len(world.calls) == 2, what="the removal")
            assert time.monotonic() - relabelled >= 0.35  # not before the grace period
            assert world.calls[1] == ("remove", ["new"], "no longer selected by 'payments'")
    messages = [r.getMessage() for r in caplog.records]
    assert any("no longer matches secret 'new' (its labels no longer match)" in m for m in messages)
    assert any("select 'payments': secret 'new' leaves the selection" in m for m in messages)
    assert read_state(tmp_path)["payments"].matched == ()


async def test_matching_again_within_the_grace_period_cancels_the_removal(tmp_path: Path) -> None:
    world = World([listing("db", app="payments")])
    discovery = make(world, tmp_path, settings=settings(grace_period=0.3))
    discovery.start()
    async with running(discovery, world):
        await until(lambda: world.calls, what="the secret added")
        discovery.on_secret(event("SECRET_UPDATE", "db"), listing("db", app="other"))
        await asyncio.sleep(0.1)
        discovery.on_secret(event("SECRET_UPDATE", "db"), listing("db", app="payments"))
        await asyncio.sleep(0.5)
    assert world.calls == [("add", ["db"])]


async def test_a_deleted_secret_leaves_after_the_grace_period(tmp_path: Path) -> None:
    world = World([listing("db", app="payments")])
    discovery = make(world, tmp_path, settings=settings(grace_period=0.1))
    discovery.start()
    async with running(discovery, world):
        await until(lambda: world.calls, what="the secret added")
        discovery.on_secret(event("SECRET_DELETE", "db"), SecretListing(PROJECT, None, "db"))
        await until(lambda: len(world.calls) == 2, what="the removal")
    assert world.kinds() == ["add", "remove"]


async def test_a_listing_without_the_secret_removes_it_after_the_grace_period(tmp_path: Path) -> None:
    world = World([listing("db", app="payments")])
    discovery = make(world, tmp_path, settings=settings(grace_period=0.2, relist_interval=0.1))
    discovery.start()
    async with running(discovery, world):
        await until(lambda: world.calls, what="the secret added")
        world.secrets = []
        await until(lambda: len(world.calls) == 2, what="the removal")
    assert world.kinds() == ["add", "remove"]


async def test_an_event_is_not_undone_by_a_listing_that_started_before_it(tmp_path: Path) -> None:
    world = World()
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_lister(select: SelectSpec) -> list[SecretListing]:
        world.listings += 1
        started.set()
        await release.wait()
        return []  # read before the secret existed

    discovery = Discovery([PAYMENTS], [], slow_lister, settings(grace_period=0.05), state_dir=tmp_path)
    discovery.start()
    async with running(discovery, world):
        await started.wait()
        discovery.on_secret(event("SECRET_CREATE", "new"), listing("new", app="payments"))
        await until(lambda: world.calls, what="the secret added")
        release.set()
        await asyncio.sleep(0.3)
    assert world.calls == [("add", ["new"])]


async def test_a_version_event_before_the_feed_follows_a_secret_is_checked(tmp_path: Path) -> None:
    world = World([listing("db", app="payments")])
    served: dict[str, str] = {}
    discovery = make(world, tmp_path, served=served.get)
    discovery.start()
    async with running(discovery, world):
        await until(lambda: world.calls, what="the secret added")
        discovery.on_secret(event("SECRET_VERSION_ADD", "db", "1"), SecretListing(PROJECT, None, "db"))
        await until(lambda: len(world.calls) == 2, what="the check")
        assert world.calls[1] == ("check", ["db"])
        served["db"] = "1"
        discovery.on_secret(event("SECRET_VERSION_ADD", "db", "1"), SecretListing(PROJECT, None, "db"))
        discovery.on_secret(
            event("SECRET_VERSION_ADD", "unknown", "1"), SecretListing(PROJECT, None, "unknown")
        )
        await asyncio.sleep(0.1)
    assert world.kinds() == ["add", "check"]


async def test_events_name_projects_by_number(tmp_path: Path) -> None:
    world = World()
    listed = {PROJECT: "123456"}
    discovery = make(world, tmp_path, names=ProjectNames(listed))
    discovery.start()
    async with running(discovery, world):
        await until(lambda: world.listings == 1, what="the first listing")
        discovery.on_secret(
            SecretEvent("SECRET_CREATE", "projects/123456/secrets/new"),
            SecretListing("123456", None, "new", {"app": "payments"}),
        )
        await until(lambda: world.calls, what="the secret added")
    assert str(world.specs["new"].ref) == f"projects/{PROJECT}/secrets/new/versions/latest"


# --------------------------------------------------------------------------------------------------
# Collisions and the events' health
# --------------------------------------------------------------------------------------------------


async def test_a_collision_is_logged_once_naming_both_and_the_loser_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World([listing("db", app="payments"), listing("api", app="payments")])
    plain = SelectSpec(name="payments", project=PROJECT, labels=(("app", "payments"),))
    discovery = make(world, tmp_path, plain, explicit=[explicit("db", "configured-db")])
    discovery.start()
    with caplog.at_level(logging.ERROR, logger="agent.discovery"):
        async with running(discovery, world):
            await until(lambda: world.calls, what="the secrets added")
            discovery.on_secret(event("SECRET_UPDATE", "db"), listing("db", app="payments"))
            await asyncio.sleep(0.1)
    assert world.calls == [("add", ["api"])]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "select 'payments' maps secret 'db' to name 'db', which secrets[0] 'db' already uses: skipped"
    ]
    assert discovery.collisions == [errors[0].removesuffix(": skipped")]


def test_the_relist_interval_follows_the_events_health() -> None:
    discovery = Discovery(
        [PAYMENTS],
        [],
        World().lister,
        DiscoverySettings(discovery=DiscoveryConfig(), fleet=FleetConfig(size=10_000), events=True),
    )
    assert discovery.relist_interval() == 3600.0  # events flow: the 1 hour floor
    discovery.set_events_flowing(False)
    assert discovery.relist_interval() == 2000.0  # 60 s * 10,000 pods / 300 reads per minute
    small = Discovery([PAYMENTS], [], World().lister, DiscoverySettings(events=True))
    assert small.relist_interval() == 3600.0
    small.set_events_flowing(False)
    assert small.relist_interval() == 600.0


def test_the_record_takes_a_reserved_name_no_secret_may_take() -> None:
    from agent.config import RESERVED_FILE_NAMES, parse_relative_file, reserved_name_reason

    assert SELECTION_FILE_NAME in RESERVED_FILE_NAMES
    reason = "reserved for the record of what the selections matched"
    assert reserved_name_reason(SELECTION_FILE_NAME) == reason
    with pytest.raises(ValueError, match=reason):
        parse_relative_file(SELECTION_FILE_NAME)


async def test_when_events_stop_an_overdue_relist_comes_soon_and_not_before(tmp_path: Path) -> None:
    listed_at = time.time() - 1200  # 20 minutes ago: within the hour of events, past the 10 minutes without
    write_state(tmp_path, {"payments": SelectionRecord(fingerprint(PAYMENTS), listed_at, ("db",))})
    world = World([listing("db", app="payments")])
    events_on = DiscoverySettings(
        discovery=DiscoveryConfig(start_jitter=0.0), fleet=FleetConfig(), events=True, backoff=FAST
    )
    discovery = make(world, tmp_path, settings=events_on)
    discovery.start()
    async with running(discovery, world):
        await asyncio.sleep(0.1)
        assert world.listings == 0  # events flow: the next re-list is 40 minutes away
        discovery.set_events_flowing(False)
        await until(lambda: world.listings == 1, what="the re-list once events stopped")
    assert world.calls == []
