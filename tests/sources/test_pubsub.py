"""The events feed (``agent.sources.pubsub``): what each Secret Manager event means, the subscription it
creates, and the feed itself against the official Pub/Sub emulator and our Secret Manager emulator
publishing to it.

Note on filters: the Pub/Sub emulator stores a subscription's filter but does NOT apply it (every message of
the topic is delivered). The agent therefore filters every message itself too; the tests check the filter the
subscription carries (what the real service applies) and that nothing about other secrets ever reaches the
Syncer or Secret Manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import EventsConfig, SecretSpec, load_config
from agent.config.refs import parse_ref
from agent.core.store import SnapshotStore
from agent.errors import ConfigError
from agent.sinks.snapshot import SnapshotSink
from agent.sources.gcp import GcpSource
from agent.sources.pubsub import (
    MAX_FILTER_BYTES,
    MESSAGE_RETENTION_SECONDS,
    EventFeed,
    EventsUnavailable,
    EventTargets,
    SecretEvent,
    decide,
    new_subscription_id,
    parse_event,
    require_pubsub,
    subscription_filter,
)
from agent.sync import Syncer, SyncSettings
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import running_emulator
from testing.apps import wait_until
from testing.pubsub_emulator import PubSubChannel, free_port
from tests.conftest import grpc_client
from tests.e2e.conftest import PROJECT, Upstream

# --------------------------------------------------------------------------------------------------
# Decisions (pure)
# --------------------------------------------------------------------------------------------------

SECRET = "projects/my-project/secrets/db"


def spec(version: str = "latest", name: str = "db") -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(f"{SECRET}/versions/{version}"))


def event(kind: str, version: str | None = None, data: object = None) -> SecretEvent:
    return SecretEvent(kind, SECRET, version, json.dumps(data).encode() if data is not None else b"")


@pytest.mark.parametrize(
    ("kind", "version", "wanted", "served", "data", "action"),
    [
        # latest follows newer versions only: duplicates and out-of-order events cost nothing
        ("SECRET_VERSION_ADD", "5", "latest", "4", None, "fetch"),
        ("SECRET_VERSION_ADD", "4", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_ADD", "3", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_ADD", "10", "latest", "9", None, "fetch"),  # numbers, not text: "10" > "9"
        ("SECRET_VERSION_ENABLE", "5", "latest", "4", None, "fetch"),
        ("SECRET_VERSION_ENABLE", "2", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_ADD", "1", "latest", None, None, "fetch"),  # nothing served yet: any news helps
        # pinned versions never move
        ("SECRET_VERSION_ADD", "5", "3", "3", None, "ignore"),
        ("SECRET_VERSION_ENABLE", "3", "3", None, None, "ignore"),
        # aliases move with SECRET_UPDATE, not with new versions
        ("SECRET_VERSION_ADD", "5", "current", "4", None, "ignore"),
        ("SECRET_UPDATE", None, "current", "4", {"versionAliases": {"current": "5"}}, "fetch"),
        ("SECRET_UPDATE", None, "current", "4", {"versionAliases": {"current": "4"}}, "ignore"),
        ("SECRET_UPDATE", None, "current", "4", {"labels": {"a": "b"}}, "warn"),  # the alias is gone
        ("SECRET_VERSION_ENABLE", "5", "current", "4", None, "fetch"),  # the alias may name it
        # losing the served version: keep it, warn
        ("SECRET_VERSION_DISABLE", "4", "latest", "4", None, "warn"),
        ("SECRET_VERSION_DESTROY", "4", "latest", "4", None, "warn"),
        ("SECRET_VERSION_DESTROY_SCHEDULED", "4", "latest", "4", None, "warn"),
        ("SECRET_VERSION_DISABLE", "2", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_DISABLE", "3", "3", "3", None, "warn"),
        ("SECRET_DELETE", None, "latest", "4", None, "warn"),
        # the rest is news, not work
        ("SECRET_UPDATE", None, "latest", "4", {"labels": {"a": "b"}}, "ignore"),
        ("SECRET_ROTATE", None, "latest", "4", None, "ignore"),
        ("SECRET_CREATE", None, "latest", None, None, "ignore"),
    ],
)
def test_what_an_event_means_for_a_secret(
    kind: str, version: str | None, wanted: str, served: str | None, data: object, action: str
) -> None:
    decision = decide(event(kind, version, data), spec(wanted), served)
    assert decision.action == action, decision.reason


def test_events_are_read_from_the_attributes_secret_manager_sets() -> None:
    parsed = parse_event(
        {
            "eventType": "SECRET_VERSION_ADD",
            "secretId": "projects/123456/secrets/db",
            "versionId": "projects/123456/secrets/db/versions/7",
            "dataFormat": "JSON_API_V1",
        },
        b"{}",
    )
    assert parsed == SecretEvent("SECRET_VERSION_ADD", "projects/123456/secrets/db", "7", b"{}")
    assert parse_event({"eventType": "TOPIC_CONFIGURED"}) is None  # the service's test message
    assert parse_event({"something": "else"}) is None


def test_events_name_secrets_with_the_project_number_and_still_find_ours() -> None:
    """Secret Manager's events (and the names it returns) carry the project NUMBER; configs use the id."""
    db = SecretSpec(name="db", ref=parse_ref("projects/my-project/secrets/db"))
    api = SecretSpec(name="api", ref=parse_ref("projects/my-project/secrets/api-key/versions/3"))
    eu = SecretSpec(name="eu", ref=parse_ref("projects/my-project/locations/europe-west1/secrets/db"))
    other = SecretSpec(name="other", ref=parse_ref("projects/other-project/secrets/db"))
    # Only db was fetched (api failed at bootstrap); the project's number applies to api as well.
    targets = EventTargets(
        [db, api, eu, other], {"projects/my-project/secrets/db": "projects/123456/secrets/db"}
    )

    assert targets.specs_for("projects/123456/secrets/db") == [db]
    assert targets.specs_for("projects/my-project/secrets/db") == [db]
    assert targets.specs_for("projects/123456/secrets/api-key") == [api]
    assert targets.specs_for("projects/123456/locations/europe-west1/secrets/db") == [eu]
    assert targets.specs_for("projects/other-project/secrets/db") == [other]
    assert targets.specs_for("projects/123456/secrets/unknown") == ()
    assert "projects/123456/secrets/db" in targets.secret_names


def test_the_subscription_filter_names_our_secrets_within_pubsubs_256_bytes() -> None:
    few = ["projects/123456/secrets/db", "projects/my-project/secrets/db"]
    assert subscription_filter(few) == (
        'attributes.secretId = "projects/123456/secrets/db" OR '
        'attributes.secretId = "projects/my-project/secrets/db"'
    )
    many = [f"projects/{p}/secrets/secret-number-{i}" for p in ("123456", "my-project") for i in range(20)]
    by_project = subscription_filter(many)
    assert by_project == (
        'hasPrefix(attributes.secretId, "projects/123456/secrets/") OR '
        'hasPrefix(attributes.secretId, "projects/my-project/secrets/")'
    )
    projects = [f"projects/project-number-{i:03d}/secrets/db" for i in range(20)]
    assert subscription_filter(projects) is None  # cannot be expressed: the agent filters by itself
    for names in (few, many, projects):
        made = subscription_filter(names)
        assert made is None or len(made.encode()) <= MAX_FILTER_BYTES


def test_created_subscription_ids_name_the_pod_and_are_valid() -> None:
    assert (
        new_subscription_id("payments-7d9f8b-x2k4q", "0a1b2c3d")
        == "secrets-agent-payments-7d9f8b-x2k4q-0a1b2c3d"
    )
    assert new_subscription_id("My_Laptop.local", "0a1b2c3d") == "secrets-agent-my-laptop-local-0a1b2c3d"
    long = new_subscription_id("x" * 300, "0a1b2c3d")
    assert len(long) == 255
    assert long.endswith("-0a1b2c3d")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def test_events_are_configured_from_the_file_env_and_flags(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("events:\n  topic: projects/my-project/topics/secret-events\n  max_delay: 250ms\n")
    config = load_config(file, {"SECRETS_AGENT_EVENTS_POLL_INTERVAL": "2h"}, {})
    assert config.events == EventsConfig(
        topic="projects/my-project/topics/secret-events", max_delay=0.25, poll_interval=7200.0
    )
    assert config.events.enabled
    assert config.events.subscription_ttl == 86400.0
    flagged = load_config(
        None,
        {},
        {"events.subscription": "projects/123456/subscriptions/agent-pod-1", "events.max_delay": "0"},
    )
    assert flagged.events.subscription == "projects/123456/subscriptions/agent-pod-1"
    assert flagged.events.max_delay == 0.0
    assert not load_config(None, {}, {}).events.enabled


def test_cli_flags_set_the_topic_or_the_subscription() -> None:
    from agent.cli import parse

    invocation = parse(["check-config", "--events-topic", "projects/my-project/topics/secret-events"], {})
    assert invocation.config is not None
    assert invocation.config.events.topic == "projects/my-project/topics/secret-events"
    invocation = parse(
        ["check-config", "--events-subscription", "projects/my-project/subscriptions/mine"], {}
    )
    assert invocation.config is not None
    assert invocation.config.events.subscription == "projects/my-project/subscriptions/mine"


@pytest.mark.parametrize(
    ("env", "path", "fragment"),
    [
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "secret-events"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "projects/PROJECT/topics/ID",
        ),
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/subscriptions/sub"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "projects/PROJECT/topics/ID",
        ),
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/topics/go"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "3-255",
        ),
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/topics/goog-events"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "'goog'",
        ),
        (
            {"SECRETS_AGENT_EVENTS_SUBSCRIPTION": "projects/X/subscriptions/abc"},
            "env SECRETS_AGENT_EVENTS_SUBSCRIPTION",
            "project id",
        ),
        (
            {"SECRETS_AGENT_EVENTS_SUBSCRIPTION_TTL": "12h"},
            "env SECRETS_AGENT_EVENTS_SUBSCRIPTION_TTL",
            "at least 1 day",
        ),
        (
            {
                "SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/topics/secret-events",
                "SECRETS_AGENT_EVENTS_SUBSCRIPTION": "projects/my-project/subscriptions/mine",
            },
            "events.subscription",
            "not both",
        ),
    ],
)
def test_bad_events_settings_are_refused_with_their_path(
    env: dict[str, str], path: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env, {})
    problems = {p.path: p.message for p in caught.value.problems}
    assert list(problems) == [path]
    assert fragment in problems[path]


def test_events_without_the_pubsub_extra_fail_at_start_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    # As if the extra were not installed (even when another test imported it already).
    monkeypatch.setitem(sys.modules, "google.cloud.pubsub_v1", None)
    monkeypatch.delattr("google.cloud.pubsub_v1", raising=False)
    with pytest.raises(EventsUnavailable, match=re.escape("pip install 'secrets-agent[pubsub]'")):
        require_pubsub()
    code = main(
        [
            "run",
            "--endpoint",
            "127.0.0.1:1",
            "--output-dir",
            str(tmp_path / "out"),
            "--events-topic",
            "projects/my-project/topics/secret-events",
            "--secret",
            "db=projects/my-project/secrets/db",
        ]
    )
    assert code == 1
    assert not (tmp_path / "out").exists()  # refused before anything was fetched or written
    assert (
        "google-cloud-pubsub is not installed: pip install 'secrets-agent[pubsub]'" in capsys.readouterr().err
    )


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
    caplog.set_level(logging.INFO, logger="agent.sources.pubsub")
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
