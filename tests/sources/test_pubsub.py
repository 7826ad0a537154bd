"""One Pub/Sub subscription's lifecycle (``agent.sources.pubsub.Subscription``), shared by the agent's events
feed (tests/sources/test_event_feed.py) and ``rotate --listen`` (tests/rotation/test_listen.py): creating
our own subscription, pulling, giving back what was not handled, deleting ours, re-creating it when it is
gone; against the official Pub/Sub emulator."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.core.retry import Backoff
from agent.sources.events import new_subscription_name
from agent.sources.pubsub import (
    ACK_DEADLINE_SECONDS,
    Connected,
    EventsUnavailable,
    NewSubscription,
    Received,
    Subscription,
    SubscriptionUnavailable,
    require_pubsub,
)
from testing.apps import wait_until
from testing.pubsub_emulator import PubSubChannel

FAST = Backoff(initial=0.05, maximum=0.2)
log = logging.getLogger("tests.pubsub")


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


@dataclass
class Followed:
    """A Subscription under test, what it reported, and a task moving what it receives into ``items``."""

    subscription: Subscription
    health: list[tuple[bool, str]] = field(default_factory=list)
    items: list[Connected | Received] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def messages(self) -> list[Any]:
        return [m for item in self.items if isinstance(item, Received) for m in item.messages]

    def start(self) -> None:
        async def pump() -> None:
            async for item in self.subscription.receive():
                self.items.append(item)

        self.task = asyncio.create_task(pump())

    async def stop(self, unhandled: list[Any] | None = None) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.wait_for(self.subscription.close(unhandled or []), 15)


@pytest.fixture
async def follow() -> AsyncIterator[Any]:
    """``follow(name, create=None)``: a Subscription with a fast backoff, closed at the end of the test."""
    made: list[Followed] = []

    def make(name: str, create: NewSubscription | None = None) -> Followed:
        health: list[tuple[bool, str]] = []
        subscription = Subscription(
            name,
            create=create,
            backoff=FAST,
            label="test",
            log=log,
            on_health=lambda healthy, why: health.append((healthy, why)),
        )
        followed = Followed(subscription, health)
        made.append(followed)
        return followed

    try:
        yield make
    finally:
        for followed in made:
            await followed.stop()


def publish(channel: PubSubChannel, kind: str = "SECRET_ROTATE") -> None:
    attributes = {"eventType": kind, "secretId": f"projects/{channel.project}/secrets/db"}
    channel.publisher.publish(channel.topic, b"{}", **attributes).result(timeout=10)


def exists(channel: PubSubChannel, name: str) -> bool:
    from google.api_core import exceptions

    try:
        channel.subscriber.get_subscription(request={"subscription": name}, timeout=10)
    except exceptions.NotFound:
        return False
    return True


@pytest.mark.pubsub
async def test_our_subscription_is_created_as_asked_pulled_and_deleted_on_close(
    pubsub: PubSubChannel, follow: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tests.pubsub")
    new = NewSubscription(
        pubsub.topic, ttl_seconds=2 * 86400, retention_seconds=3600, filter='attributes.eventType = "X"'
    )
    name = new_subscription_name(pubsub.topic, "test-pod", prefix="secrets-agent-test")
    followed = follow(name, new)
    assert await followed.subscription.open() is True
    assert followed.health == [(True, f"receiving events from {name}")]

    created = pubsub.subscriber.get_subscription(request={"subscription": name}, timeout=10)
    assert created.topic == pubsub.topic
    assert created.filter == 'attributes.eventType = "X"'
    assert created.expiration_policy.ttl.total_seconds() == 2 * 86400
    assert created.message_retention_duration.total_seconds() == 3600
    assert created.ack_deadline_seconds == ACK_DEADLINE_SECONDS
    assert dict(created.labels) == {"created-by": "secrets-agent"}

    followed.start()  # opened already: receive() pulls on that connection, no second Connected
    publish(pubsub)
    await wait_until(lambda: len(followed.messages()) == 1, within=20, what="the message")
    assert followed.items[0] == Received(followed.messages())
    followed.messages()[0].ack()

    await followed.stop()
    assert not exists(pubsub, name)
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.pubsub"]
    assert f"test: created subscription {name} on {pubsub.topic} " in lines[0]
    assert '(filter: attributes.eventType = "X"; expires after 2 days unused)' in lines[0]
    assert any(line.startswith(f"test: deleted subscription {name} in ") for line in lines)


@pytest.mark.pubsub
async def test_a_configured_subscription_that_does_not_exist_is_refused_by_open_and_kept_trying_by_receive(
    pubsub: PubSubChannel, follow: Any
) -> None:
    name = f"{pubsub.subscription}-missing"
    followed = follow(name)
    with pytest.raises(SubscriptionUnavailable) as refused:
        await followed.subscription.open()
    assert refused.value.missing
    assert str(refused.value).startswith("NOT_FOUND: ")
    assert f"({name} or its topic does not exist)" in str(refused.value)
    assert followed.health == []  # one attempt: the caller decides

    followed.start()
    await wait_until(lambda: len(followed.health) >= 2, within=20, what="two more attempts")
    assert all(not healthy and "retrying in " in why for healthy, why in followed.health)
    pubsub.subscriber.create_subscription(request={"name": name, "topic": pubsub.topic})
    try:
        await wait_until(lambda: Connected(created=False) in followed.items, within=20, what="connected")
        assert followed.health[-1] == (True, f"receiving events from {name}")
        await followed.stop()
        assert exists(pubsub, name)  # theirs: kept
    finally:
        pubsub.subscriber.delete_subscription(request={"subscription": name})


@pytest.mark.pubsub
async def test_unhandled_messages_are_given_back_on_close_at_once(pubsub: PubSubChannel, follow: Any) -> None:
    """The channel's subscription has a 10 s ack deadline: a message pulled again within 5 s of the close
    was given back, not left to expire."""
    followed = follow(pubsub.subscription)
    followed.start()
    await wait_until(lambda: bool(followed.health), within=20, what="connected")
    publish(pubsub)
    await wait_until(lambda: len(followed.messages()) == 1, within=20, what="the message")

    await followed.stop(unhandled=followed.messages())

    [again] = pubsub.pull_count(1, timeout=5)
    assert again.attributes["eventType"] == "SECRET_ROTATE"
    assert exists(pubsub, pubsub.subscription)


@pytest.mark.pubsub
async def test_our_subscription_deleted_behind_our_back_is_created_again(
    pubsub: PubSubChannel, follow: Any
) -> None:
    new = NewSubscription(pubsub.topic, ttl_seconds=86400, retention_seconds=600)
    name = new_subscription_name(pubsub.topic, "test-pod", prefix="secrets-agent-test")
    followed = follow(name, new)
    followed.start()
    await wait_until(lambda: followed.items == [Connected(created=True)], within=20, what="created")

    pubsub.subscriber.delete_subscription(request={"subscription": name})
    await wait_until(
        lambda: followed.items.count(Connected(created=True)) == 2, within=30, what="created again"
    )
    assert any(not healthy and "reconnecting" in why for healthy, why in followed.health)
    assert followed.health[-1] == (True, f"receiving events from {name}")
    publish(pubsub)
    await wait_until(lambda: len(followed.messages()) == 1, within=20, what="a message on the new one")
