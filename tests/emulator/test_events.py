"""Event notifications: the emulator publishes what Secret Manager publishes, to the Pub/Sub emulator."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1 import types
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from agent_emulator.events import CLOSE_TIMEOUT_SECONDS, EventPublisher, build_event_message, make_publisher
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from testing.pubsub_emulator import PubSubChannel, ReceivedMessage, free_port
from tests.conftest import grpc_client

PROJECT = "events-project"
CANARY = b"canary-payload-7f3a9c-never-in-an-event"


# --- the message format (pure) ---------------------------------------------------------------------------


def _secret(name: str = f"projects/{PROJECT}/secrets/db", topics: tuple[str, ...] = ()) -> types.Secret:
    return types.Secret(
        name=name,
        topics=[types.Topic(name=t) for t in topics],
        labels={"team": "payments"},
        replication=types.Replication(automatic=types.Replication.Automatic()),
    )


@pytest.mark.parametrize(
    ("event_type", "with_version", "expected_extra"),
    [
        ("SECRET_CREATE", False, {}),
        ("SECRET_UPDATE", False, {}),
        ("SECRET_ROTATE", False, {}),
        ("SECRET_DELETE", False, {"deleteType": "REQUESTED"}),
        ("SECRET_VERSION_ADD", True, {"versionId": f"projects/{PROJECT}/secrets/db/versions/3"}),
        ("SECRET_VERSION_DISABLE", True, {"versionId": f"projects/{PROJECT}/secrets/db/versions/3"}),
    ],
)
def test_message_attributes_follow_the_service(
    event_type: str, with_version: bool, expected_extra: dict[str, str]
) -> None:
    version = types.SecretVersion(
        name=f"projects/{PROJECT}/secrets/db/versions/3", state=types.SecretVersion.State.DISABLED
    )
    message = build_event_message(event_type, _secret(), version if with_version else None)
    assert message.attributes == {
        "eventType": event_type,
        "dataFormat": "JSON_API_V1",
        "secretId": f"projects/{PROJECT}/secrets/db",
        **expected_extra,
    }
    data = json.loads(message.data)
    if with_version:
        assert data == {"name": f"projects/{PROJECT}/secrets/db/versions/3", "state": "DISABLED"}
    else:
        assert data["name"] == f"projects/{PROJECT}/secrets/db"
        assert data["labels"] == {"team": "payments"}
        assert "automatic" in data["replication"]  # JSON_API_V1 is the REST shape: camelCase, enums by name


def test_an_expired_secret_is_deleted_with_delete_type_expiration() -> None:
    message = build_event_message("SECRET_DELETE", _secret(), delete_type="EXPIRATION")
    assert message.attributes["deleteType"] == "EXPIRATION"


def test_topic_configured_is_a_bare_test_message() -> None:
    message = build_event_message("TOPIC_CONFIGURED", _secret())
    assert message == type(message)(data=b"", attributes={"eventType": "TOPIC_CONFIGURED"})


def test_without_pubsub_emulator_host_events_are_dropped_and_the_reason_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    caplog.set_level(logging.INFO, logger="agent_emulator.events")
    publisher = make_publisher()
    assert type(publisher) is EventPublisher
    secret = _secret(topics=("projects/p/topics/t",))
    publisher.publish("SECRET_UPDATE", secret)
    publisher.publish("SECRET_UPDATE", secret)
    publisher.publish("SECRET_UPDATE", _secret())  # no topics: nothing to drop
    assert publisher.counts.dropped == 2
    reasons = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(reasons) == 1
    assert "PUBSUB_EMULATOR_HOST" in reasons[0]


# --- end to end: official Secret Manager client -> our emulator -> official Pub/Sub emulator ---------------


@dataclass
class EventsRig:
    endpoints: EmulatorEndpoints
    client: secretmanager_v1.SecretManagerServiceClient
    channel: PubSubChannel

    def create_secret(self, secret_id: str, *, topics: bool = True, **fields: object) -> types.Secret:
        secret = types.Secret(
            replication=types.Replication(automatic=types.Replication.Automatic()),
            topics=[types.Topic(name=self.channel.topic)] if topics else [],
            **fields,
        )
        return self.client.create_secret(
            request={"parent": f"projects/{PROJECT}", "secret_id": secret_id, "secret": secret}
        )

    def add_version(self, secret: str, data: bytes = CANARY) -> types.SecretVersion:
        return self.client.add_secret_version(request={"parent": secret, "payload": {"data": data}})


@pytest.fixture
def rig(pubsub: PubSubChannel) -> Iterator[EventsRig]:
    """Our emulator started after PUBSUB_EMULATOR_HOST is set (its publisher reads the variable at start)."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        try:
            yield EventsRig(endpoints, client, pubsub)
        finally:
            client.transport.close()


def _of_type(messages: list[ReceivedMessage], event_type: str) -> list[ReceivedMessage]:
    return [m for m in messages if m.attributes.get("eventType") == event_type]


def _has(event_type: str, count: int = 1) -> Callable[[list[ReceivedMessage]], bool]:
    return lambda received: len(_of_type(received, event_type)) >= count


def _assert_no_payload(message: ReceivedMessage) -> None:
    everything = message.data + json.dumps(message.attributes).encode()
    assert CANARY not in everything
    assert base64.b64encode(CANARY) not in everything


@pytest.mark.pubsub
def test_adding_a_version_publishes_secret_version_add(rig: EventsRig) -> None:
    secret = rig.create_secret("db-password")
    version = rig.add_version(secret.name)

    received = rig.channel.pull_until(_has("SECRET_VERSION_ADD"))

    [event] = _of_type(received, "SECRET_VERSION_ADD")
    assert event.attributes == {
        "eventType": "SECRET_VERSION_ADD",
        "dataFormat": "JSON_API_V1",
        "secretId": f"projects/{PROJECT}/secrets/db-password",
        "versionId": f"projects/{PROJECT}/secrets/db-password/versions/1",
    }
    data = json.loads(event.data)
    assert data["name"] == version.name == f"projects/{PROJECT}/secrets/db-password/versions/1"
    assert data["state"] == "ENABLED"
    assert "createTime" in data
    assert "payload" not in data
    _assert_no_payload(event)


@pytest.mark.pubsub
def test_every_mutation_publishes_its_event_type(rig: EventsRig) -> None:
    secret = rig.create_secret("api-key")
    name = secret.name
    rig.add_version(name)
    v1 = f"{name}/versions/1"
    rig.client.disable_secret_version(request={"name": v1})
    rig.client.enable_secret_version(request={"name": v1})
    rig.client.destroy_secret_version(request={"name": v1})
    rig.client.update_secret(
        request={
            "secret": {"name": name, "labels": {"rotated": "yes"}},
            "update_mask": field_mask_pb2.FieldMask(paths=["labels"]),
        }
    )
    rig.client.delete_secret(request={"name": name})

    received = rig.channel.pull_until(_has("SECRET_DELETE"))

    types_seen = Counter(m.attributes["eventType"] for m in received)
    types_seen.pop("TOPIC_CONFIGURED", None)  # the service's test message; optional for us
    assert types_seen == Counter(
        [
            "SECRET_CREATE",
            "SECRET_VERSION_ADD",
            "SECRET_VERSION_DISABLE",
            "SECRET_VERSION_ENABLE",
            "SECRET_VERSION_DESTROY",
            "SECRET_UPDATE",
            "SECRET_DELETE",
        ]
    )
    for message in received:
        _assert_no_payload(message)
        if message.attributes["eventType"] != "TOPIC_CONFIGURED":
            assert message.attributes["secretId"] == name
            assert message.attributes["dataFormat"] == "JSON_API_V1"

    def data(event_type: str) -> dict[str, object]:
        [message] = _of_type(received, event_type)
        parsed: dict[str, object] = json.loads(message.data)
        return parsed

    assert data("SECRET_VERSION_DISABLE")["state"] == "DISABLED"
    assert data("SECRET_VERSION_ENABLE")["state"] == "ENABLED"
    destroyed = data("SECRET_VERSION_DESTROY")
    assert destroyed["state"] == "DESTROYED"
    assert "destroyTime" in destroyed
    for event_type in ("SECRET_VERSION_DISABLE", "SECRET_VERSION_ENABLE", "SECRET_VERSION_DESTROY"):
        [message] = _of_type(received, event_type)
        assert message.attributes["versionId"] == v1
    assert data("SECRET_UPDATE")["labels"] == {"rotated": "yes"}
    assert data("SECRET_CREATE")["topics"] == [{"name": rig.channel.topic}]
    [deleted] = _of_type(received, "SECRET_DELETE")
    assert deleted.attributes["deleteType"] == "REQUESTED"
    assert json.loads(deleted.data)["name"] == name


@pytest.mark.pubsub
def test_a_secret_without_topics_publishes_nothing(rig: EventsRig) -> None:
    silent = rig.create_secret("no-topics", topics=False)
    rig.add_version(silent.name)
    rig.client.disable_secret_version(request={"name": f"{silent.name}/versions/1"})
    rig.client.delete_secret(request={"name": silent.name})
    # A change to a secret that does publish, made after, marks the point by which anything would have arrived
    # (one publisher, one topic: the silent secret's events, had there been any, were queued first).
    loud = rig.create_secret("with-topics")
    rig.add_version(loud.name)

    received = rig.channel.pull_until(_has("SECRET_VERSION_ADD"))

    assert {m.attributes.get("secretId") for m in received} <= {loud.name, None}


@pytest.mark.pubsub
def test_rotation_due_publishes_secret_rotate_and_advances_next_rotation_time(rig: EventsRig) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = now + dt.timedelta(hours=1)
    period = dt.timedelta(hours=24)
    next_rotation = timestamp_pb2.Timestamp()
    next_rotation.FromDatetime(first)
    secret = rig.create_secret(
        "rotating",
        rotation=types.Rotation(
            next_rotation_time=next_rotation,
            rotation_period=duration_pb2.Duration(seconds=int(period.total_seconds())),
        ),
    )

    response = requests.post(
        f"{rig.endpoints.admin_url}/clock:advance", json={"seconds": 2 * 3600}, timeout=10
    )
    assert response.status_code == 200, response.text

    received = rig.channel.pull_until(_has("SECRET_ROTATE"))

    [event] = _of_type(received, "SECRET_ROTATE")
    assert event.attributes == {
        "eventType": "SECRET_ROTATE",
        "dataFormat": "JSON_API_V1",
        "secretId": secret.name,
    }
    assert json.loads(event.data)["name"] == secret.name
    stored = rig.client.get_secret(request={"name": secret.name})
    assert stored.rotation.next_rotation_time == first + period
    assert stored.rotation.rotation_period == period


class _RecordWaiter(logging.Handler):
    """Sets an event when a record containing ``needle`` is logged (from whatever thread logs it)."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.found = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.needle in message:
            self.found.set()


@pytest.mark.pubsub
def test_a_missing_topic_is_logged_and_does_not_fail_the_rpc(rig: EventsRig) -> None:
    missing = f"projects/{rig.channel.project}/topics/does-not-exist"
    waiter = _RecordWaiter(missing)
    events_log = logging.getLogger("agent_emulator.events")
    events_log.addHandler(waiter)
    try:
        secret = rig.client.create_secret(
            request={
                "parent": f"projects/{PROJECT}",
                "secret_id": "misconfigured",
                "secret": {
                    "replication": {"automatic": {}},
                    "topics": [{"name": missing}, {"name": rig.channel.topic}],
                },
            }
        )
        version = rig.add_version(secret.name)
        assert version.state == types.SecretVersion.State.ENABLED
        access = rig.client.access_secret_version(request={"name": version.name})
        assert access.payload.data == CANARY

        assert waiter.found.wait(timeout=10), f"no log line naming {missing}; saw {waiter.messages}"
    finally:
        events_log.removeHandler(waiter)
    failure = next(m for m in waiter.messages if missing in m)
    assert "NotFound" in failure
    assert CANARY.decode() not in "\n".join(waiter.messages)
    # The topic that exists still gets its event.
    rig.channel.pull_until(_has("SECRET_VERSION_ADD"))


def test_an_unreachable_pubsub_emulator_neither_fails_nor_holds_the_rpcs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    waiter = _RecordWaiter("not published by shutdown")
    events_log = logging.getLogger("agent_emulator.events")
    events_log.addHandler(waiter)
    try:
        with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
            client = grpc_client(endpoints.grpc_target)
            try:
                secret = client.create_secret(
                    request={
                        "parent": f"projects/{PROJECT}",
                        "secret_id": "pubsub-down",
                        "secret": {
                            "replication": {"automatic": {}},
                            "topics": [{"name": "projects/test-project/topics/t"}],
                        },
                    }
                )
                started = time.monotonic()
                version = client.add_secret_version(
                    request={"parent": secret.name, "payload": {"data": CANARY}}
                )
                assert time.monotonic() - started < 1.0
                assert client.access_secret_version(request={"name": version.name}).payload.data == CANARY
            finally:
                client.transport.close()
            shutdown_started = time.monotonic()
        assert time.monotonic() - shutdown_started < CLOSE_TIMEOUT_SECONDS + 3.0
    finally:
        events_log.removeHandler(waiter)
    assert waiter.found.is_set(), waiter.messages
    assert CANARY.decode() not in "\n".join(waiter.messages)
