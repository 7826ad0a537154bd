"""The agent's events feed (``agent.sources.event_feed.EventFeed``) against the official Pub/Sub emulator and
our Secret Manager emulator publishing to it: the subscription it creates, which events reach the Syncer,
when messages are acknowledged, and Pub/Sub being unreachable.

Note on filters: the Pub/Sub emulator stores a subscription's filter but does NOT apply it (every message of
the topic is delivered). The agent therefore filters every message itself too; the tests check the filter the
subscription carries (what the real service applies) and that nothing about other secrets ever reaches the
Syncer or Secret Manager.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import EventsConfig, SecretSpec
from agent.config.refs import parse_ref
from agent.core.store import SnapshotStore
from agent.sinks.snapshot import SnapshotSink
from agent.sources.event_feed import MESSAGE_RETENTION_SECONDS, EventFeed
from agent.sources.gcp import GcpSource
from agent.sync import Syncer, SyncSettings
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import running_emulator
from testing.apps import wait_until
from testing.pubsub_emulator import PubSubChannel, free_port
from tests.conftest import grpc_client
from tests.e2e.conftest import PROJECT, Upstream

# --------------------------------------------------------------------------------------------------
# Against the Pub/Sub emulator and our Secret Manager emulator
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def upstream(pubsub: PubSubChannel) -> Iterator[Upstream]:
    """Our Secret Manager emulator, started after PUBSUB_EMULATOR_HOST is set so that it publishes events."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        try:
            yield Upstream(endpoints, client)
        finally:
            client.transport.close()


def create(upstream: Upstream, channel: PubSubChannel, name: str, *values: str) -> None:
    """A secret that publishes its events to the test's topic, with ``values`` as versions 1, 2, ...

    Returns once Pub/Sub has its events (pulled from the channel's own subscription): our emulator
    publishes in the background, and a subscription created later must not see them arrive late."""
    upstream.client.create_secret(
        request={
            "parent": f"projects/{PROJECT}",
            "secret_id": name,
            "secret": {"replication": {"automatic": {}}, "topics": [{"name": channel.topic}]},
        }
    )
    for value in values:
        upstream.add(name, value)
    channel.pull_count(1 + len(values))


def publish(channel: PubSubChannel, kind: str, secret: str, version: str | None = None) -> None:
    """An event as Secret Manager would send it, published by hand (duplicates, out-of-order deliveries)."""
    attributes = {"eventType": kind, "dataFormat": "JSON_API_V1", "secretId": Upstream.ref(secret)}
    if version is not None:
        attributes["versionId"] = Upstream.ref(secret, version)
    channel.publisher.publish(channel.topic, b"{}", **attributes).result(timeout=10)


def specs(*names: str, pinned: dict[str, str] | None = None) -> list[SecretSpec]:
    return [SecretSpec(name=n, ref=parse_ref(Upstream.ref(n, (pinned or {}).get(n)))) for n in names]


@dataclass
class Recorder:
    """What the feed reported: events (type, action) and health changes."""

    events: list[tuple[str, str]] = field(default_factory=list)
    health: list[bool] = field(default_factory=list)

    def count(self, kind: str, action: str) -> int:
        return self.events.count((kind, action))


@dataclass
class Agent:
    """The agent's moving parts in this process: a Syncer over GcpSource, following an EventFeed."""

    syncer: Syncer
    feed: EventFeed
    store: SnapshotStore
    output: Path
    seen: Recorder
    task: asyncio.Task[None] | None = None

    def value(self, name: str) -> bytes | None:
        served = self.store.snapshot.get(name)
        return served.data if served is not None else None


@pytest.fixture
async def make_agent(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Any]:
    """``make_agent(specs, events)``: bootstrap, then follow the feed (fleet delay 0) until the test ends."""
    made: list[tuple[Agent, GcpSource]] = []

    async def make(secrets: list[SecretSpec], events: EventsConfig) -> Agent:
        source = GcpSource(endpoint=upstream.endpoints.grpc_target)
        output = tmp_path / f"out-{len(made)}"
        store = SnapshotStore(secrets)
        syncer = Syncer(
            secrets, source, SnapshotSink(output, secrets, None), store, SyncSettings(polling=False)
        )
        await syncer.bootstrap(deadline=None)
        seen = Recorder()

        def served(name: str) -> str | None:
            current = store.snapshot.get(name)
            return current.version if current is not None else None

        feed = EventFeed(
            events,
            secrets,
            served,
            resolved=source.resolved_secret_names,
            on_health=seen.health.append,
            on_event=lambda kind, action: seen.events.append((kind, action)),
            hostname="test-pod",
        )
        agent = Agent(syncer, feed, store, output, seen)
        made.append((agent, source))
        upstream.reset_counters()
        agent.task = asyncio.create_task(syncer.follow(feed))
        return agent

    try:
        yield make
    finally:
        for agent, source in made:
            assert agent.task is not None
            agent.task.cancel()
            await asyncio.gather(agent.task, return_exceptions=True)
            await agent.feed.close()
            await source.close()


def subscription_of(channel: PubSubChannel, name: str) -> Any:
    return channel.subscriber.get_subscription(request={"subscription": name}, timeout=10)


def exists(channel: PubSubChannel, name: str) -> bool:
    from google.api_core import exceptions

    try:
        subscription_of(channel, name)
    except exceptions.NotFound:
        return False
    return True


async def caught_up(upstream: Upstream, agent: Agent, accesses: int) -> None:
    """Wait for events to flow and for the catch-up check after subscribing (``accesses`` calls)."""
    await wait_until(lambda: agent.seen.health == [True], within=20, what="events flowing")
    await wait_until(
        lambda: upstream.calls("AccessSecretVersion") >= accesses, within=10, what="the catch-up check"
    )


@pytest.mark.pubsub
async def test_the_created_subscription_is_filtered_expires_and_is_deleted_on_close(
    pubsub: PubSubChannel, upstream: Upstream, make_agent: Any
) -> None:
    create(upstream, pubsub, "db", "db-v1")
    create(upstream, pubsub, "api-key", "api-v1")
    agent = await make_agent(specs("db", "api-key"), EventsConfig(topic=pubsub.topic))
    await caught_up(upstream, agent, 2)
    name = agent.feed.subscription
    assert name.startswith(f"projects/{pubsub.project}/subscriptions/secrets-agent-test-pod-")  # the topic's

    created = subscription_of(pubsub, name)
    assert created.topic == pubsub.topic
    assert created.filter == (
        f'attributes.secretId = "projects/{PROJECT}/secrets/api-key" OR '
        f'attributes.secretId = "projects/{PROJECT}/secrets/db"'
    )
    assert created.expiration_policy.ttl.total_seconds() == 86400  # the default subscription_ttl: 1 day
    assert created.message_retention_duration.total_seconds() == MESSAGE_RETENTION_SECONDS
    assert dict(created.labels) == {"created-by": "secrets-agent"}

    assert agent.task is not None
    agent.task.cancel()
    await asyncio.gather(agent.task, return_exceptions=True)
    await agent.feed.close()
    assert not exists(pubsub, name)


@pytest.mark.pubsub
async def test_an_existing_subscription_is_used_and_kept(
    pubsub: PubSubChannel, upstream: Upstream, make_agent: Any
) -> None:
    create(upstream, pubsub, "db", "db-v1")
    agent = await make_agent(specs("db"), EventsConfig(subscription=pubsub.subscription))
    await wait_until(lambda: agent.seen.health == [True], within=20, what="events flowing")
    assert agent.feed.subscription == pubsub.subscription

    upstream.add("db", "db-v2")
    await wait_until(lambda: agent.value("db") == b"db-v2", within=10, what="db-v2 by event")
    assert upstream.calls("AccessSecretVersion") == 1  # no catch-up: a kept subscription kept its messages

    await agent.feed.close()
    assert exists(pubsub, pubsub.subscription)


@pytest.mark.pubsub
async def test_only_our_secrets_ever_reach_the_syncer(
    pubsub: PubSubChannel, upstream: Upstream, make_agent: Any
) -> None:
    create(upstream, pubsub, "db", "db-v1")
    create(upstream, pubsub, "not-ours", "x-v1")
    create(upstream, pubsub, "neither", "y-v1")
    agent = await make_agent(specs("db"), EventsConfig(topic=pubsub.topic))
    await caught_up(upstream, agent, 1)
    assert subscription_of(pubsub, agent.feed.subscription).filter == (
        f'attributes.secretId = "projects/{PROJECT}/secrets/db"'
    )

    for n in range(2, 5):
        upstream.add("not-ours", f"x-v{n}")
        upstream.add("neither", f"y-v{n}")
    upstream.add("db", "db-v2")
    await wait_until(lambda: agent.value("db") == b"db-v2", within=10, what="db-v2 by event")

    assert upstream.calls("AccessSecretVersion") == 2  # the catch-up, then db-v2: nothing for the others
    assert agent.seen.count("SECRET_VERSION_ADD", "fetch") == 1
    # The emulator delivers them anyway (it applies no filter); the agent dropped every one itself.
    await wait_until(
        lambda: agent.seen.count("SECRET_VERSION_ADD", "ignored") == 6, within=10, what="the others, ignored"
    )
    assert upstream.calls("AccessSecretVersion") == 2


@pytest.mark.pubsub
async def test_duplicate_and_out_of_order_events_change_nothing(
    pubsub: PubSubChannel, upstream: Upstream, make_agent: Any
) -> None:
    create(upstream, pubsub, "db", "db-v1", "db-v2")
    agent = await make_agent(specs("db"), EventsConfig(topic=pubsub.topic))
    await caught_up(upstream, agent, 1)

    publish(pubsub, "SECRET_VERSION_ADD", "db", "2")  # a duplicate of what is served
    publish(pubsub, "SECRET_VERSION_ADD", "db", "1")  # an old event, delivered late
    publish(pubsub, "SECRET_VERSION_ENABLE", "db", "1")
    await wait_until(lambda: len(agent.seen.events) == 3, within=10, what="three events")
    assert agent.seen.events == [("SECRET_VERSION_ADD", "ignored")] * 2 + [
        ("SECRET_VERSION_ENABLE", "ignored")
    ]
    assert upstream.calls("AccessSecretVersion") == 1  # the catch-up only
    assert agent.value("db") == b"db-v2"

    upstream.add("db", "db-v3")
    for _ in range(3):  # the same event again, three times: at most one check
        publish(pubsub, "SECRET_VERSION_ADD", "db", "3")
    await wait_until(lambda: len(agent.seen.events) == 7, within=10, what="four more events")
    assert agent.value("db") == b"db-v3"
    assert upstream.calls("AccessSecretVersion") == 2
    assert (agent.output / "db").read_bytes() == b"db-v3"


@pytest.mark.pubsub
async def test_a_check_refused_with_resource_exhausted_is_retried_with_backoff(
    pubsub: PubSubChannel, upstream: Upstream, make_agent: Any
) -> None:
    """Polling is off in this agent: only the follow loop's own retry can deliver the new version."""
    create(upstream, pubsub, "db", "db-v1")
    agent = await make_agent(specs("db"), EventsConfig(topic=pubsub.topic))
    await caught_up(upstream, agent, 1)

    upstream.set_faults({"AccessSecretVersion": {"fail_next": 2, "fail_code": "RESOURCE_EXHAUSTED"}})
    upstream.add("db", "db-v2")
    await wait_until(lambda: agent.value("db") == b"db-v2", within=15, what="db-v2 after the retries")

    assert upstream.counters()["AccessSecretVersion"] == {"OK": 2, "RESOURCE_EXHAUSTED": 2}
    assert agent.seen.count("SECRET_VERSION_ADD", "fetch") == 1  # one event, one batch, retried


@pytest.mark.pubsub
async def test_pinned_versions_ignore_events_and_losing_the_served_version_only_warns(
    pubsub: PubSubChannel, upstream: Upstream, make_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.sources.event_feed")
    create(upstream, pubsub, "db", "db-v1", "db-v2")
    create(upstream, pubsub, "api-key", "api-v1")
    agent = await make_agent(
        specs("db", "api-key", pinned={"api-key": "1"}), EventsConfig(topic=pubsub.topic)
    )
    await caught_up(upstream, agent, 1)  # db only: a pinned version cannot have changed

    upstream.add("api-key", "api-v2")
    upstream.disable("db", "2")  # the served version
    upstream.client.delete_secret(request={"name": Upstream.ref("api-key")})
    await wait_until(lambda: len(agent.seen.events) == 3, within=10, what="three events")

    assert sorted(agent.seen.events) == [
        ("SECRET_DELETE", "warned"),
        ("SECRET_VERSION_ADD", "ignored"),
        ("SECRET_VERSION_DISABLE", "warned"),
    ]
    assert upstream.calls("AccessSecretVersion") == 1
    assert (agent.value("db"), agent.value("api-key")) == (b"db-v2", b"api-v1")  # last known good, both
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "SECRET_VERSION_DISABLE version 2 of db: the served version 2 is now disabled" in w for w in warnings
    )
    assert any("SECRET_DELETE of api-key" in w for w in warnings)

    upstream.enable("db", "2")  # nothing was lost: enabling what is served fetches nothing either
    await wait_until(lambda: len(agent.seen.events) == 4, within=10, what="the enable event")
    assert agent.seen.events[-1] == ("SECRET_VERSION_ENABLE", "ignored")


@pytest.mark.pubsub
async def test_messages_are_acknowledged_only_after_the_batch_was_handled(
    pubsub: PubSubChannel, upstream: Upstream
) -> None:
    """A batch is handled when its consumer asks for the next one; only then are its messages acknowledged.
    A feed closed before that (the agent stopped mid-check) gives them back: the subscription delivers them
    again at once (to the next subscriber of a kept subscription).

    Acknowledgements are read from Pub/Sub's own bookkeeping: a seek to a snapshot of the subscription makes
    every message the snapshot records as unacknowledged deliverable again, at once.

    Each half has a subscription of its own: the Pub/Sub emulator may keep delivering to a streaming pull
    that was cancelled, so a second stream on the same subscription can starve for a while."""
    served = {"db": "1"}

    def new_feed(subscription: str) -> EventFeed:
        return EventFeed(EventsConfig(subscription=subscription), specs("db"), served.get)

    abandoned = new_feed(pubsub.subscription)
    changes = abandoned.changes()
    try:
        publish(pubsub, "SECRET_VERSION_ADD", "db", "2")
        assert await asyncio.wait_for(anext(changes), 20) == frozenset({"db"})
    finally:
        await changes.aclose()  # type: ignore[attr-defined]
        await abandoned.close()  # mid-batch: never handled
    [again] = pubsub.pull_count(1)  # (the helper acknowledges what it pulls)
    assert again.attributes["versionId"] == Upstream.ref("db", "2")

    second = f"{pubsub.subscription}-second"
    pubsub.subscriber.create_subscription(request={"name": second, "topic": pubsub.topic})
    handled = new_feed(second)
    changes = handled.changes()
    try:
        publish(pubsub, "SECRET_VERSION_ADD", "db", "3")
        assert await asyncio.wait_for(anext(changes), 20) == frozenset({"db"})
        served["db"] = "3"  # handled
        publish(pubsub, "SECRET_VERSION_ADD", "db", "4")
        # Asking for the next batch says the first one is done; the second one is never handled.
        assert await asyncio.wait_for(anext(changes), 20) == frozenset({"db"})
    finally:
        await changes.aclose()  # type: ignore[attr-defined]
        await handled.close()  # flushes the acknowledgements, gives db-4 back

    snapshot = f"projects/{pubsub.project}/snapshots/ack-check-{uuid.uuid4().hex[:12]}"
    pubsub.subscriber.create_snapshot(request={"name": snapshot, "subscription": second})
    try:
        pubsub.subscriber.seek(request={"subscription": second, "snapshot": snapshot})
        # One pull returns all that is deliverable: db-3 too, were it unacknowledged.
        response = pubsub.subscriber.pull(request={"subscription": second, "max_messages": 10}, timeout=10)
    finally:
        pubsub.subscriber.delete_snapshot(request={"snapshot": snapshot})
        pubsub.subscriber.delete_subscription(request={"subscription": second})
    back = [m.message.attributes["versionId"] for m in response.received_messages]
    assert back == [Upstream.ref("db", "4")]


async def test_pubsub_unreachable_is_reported_retried_and_closes_quickly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    health: list[bool] = []
    topic = f"projects/{PROJECT}/topics/secret-events"
    feed = EventFeed(EventsConfig(topic=topic), specs("db"), lambda name: "1", on_health=health.append)
    changes = feed.changes()
    pending = asyncio.ensure_future(anext(changes))
    try:
        await wait_until(lambda: health == [False], within=10, what="the outage reported")
        assert not pending.done()  # no batch: the Syncer keeps polling at its normal interval meanwhile
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await changes.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(feed.close(), 10)
