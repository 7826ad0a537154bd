"""The store directly: time-driven behaviour (rotation, expiry, delayed destruction) on a clock we move,
which events each change publishes, and the dump/load round trip."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from google.cloud.secretmanager_v1 import types
from google.protobuf import field_mask_pb2

from agent_emulator.clock import Clock
from agent_emulator.errors import EmulatorError
from agent_emulator.events import EventPublisher
from agent_emulator.store import SecretStore

TOPIC = "projects/p/topics/events"
SECRET = "projects/p/secrets/s"


class RecordingPublisher(EventPublisher):
    """Keeps what the store asked to publish, instead of sending it anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, str | None, dict[str, Any]]] = []

    def publish(
        self,
        event_type: str,
        secret: types.Secret,
        version: types.SecretVersion | None = None,
        **extra: Any,
    ) -> None:
        self.events.append((event_type, secret.name, version.name if version else None, extra))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def published() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def store(clock: Clock, published: RecordingPublisher) -> SecretStore:
    return SecretStore(clock, published)


def create(store: SecretStore, **secret: Any) -> types.Secret:
    return store.create_secret(types.CreateSecretRequest(parent="projects/p", secret_id="s", secret=secret))


def add(store: SecretStore, data: bytes) -> types.SecretVersion:
    return store.add_secret_version(
        types.AddSecretVersionRequest(parent=SECRET, payload=types.SecretPayload(data=data))
    )


def test_every_change_publishes_its_event_when_the_secret_has_topics(
    store: SecretStore, published: RecordingPublisher
) -> None:
    create(store, topics=[{"name": TOPIC}])
    add(store, b"v1")
    version = f"{SECRET}/versions/1"
    store.disable_secret_version(types.DisableSecretVersionRequest(name=version))
    store.enable_secret_version(types.EnableSecretVersionRequest(name=version))
    store.update_secret(
        types.UpdateSecretRequest(
            secret=types.Secret(name=SECRET, labels={"a": "b"}),
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        )
    )
    # Reads publish nothing.
    store.access_secret_version(types.AccessSecretVersionRequest(name=version))
    store.list_secret_versions(types.ListSecretVersionsRequest(parent=SECRET))
    store.destroy_secret_version(types.DestroySecretVersionRequest(name=version))
    store.get_secret(types.GetSecretRequest(name=SECRET))
    store.delete_secret(types.DeleteSecretRequest(name=SECRET))

    assert [(e[0], e[2]) for e in published.events] == [
        ("SECRET_CREATE", None),
        ("SECRET_VERSION_ADD", version),
        ("SECRET_VERSION_DISABLE", version),
        ("SECRET_VERSION_ENABLE", version),
        ("SECRET_UPDATE", None),
        ("SECRET_VERSION_DESTROY", version),
        ("SECRET_DELETE", None),
    ]


def test_no_topics_no_events(store: SecretStore, published: RecordingPublisher) -> None:
    create(store)
    add(store, b"v1")
    assert published.events == []


def test_due_rotation_fires_once_and_moves_on_by_the_period(
    store: SecretStore, clock: Clock, published: RecordingPublisher
) -> None:
    first = clock.now() + dt.timedelta(minutes=10)
    secret = create(
        store,
        topics=[{"name": TOPIC}],
        rotation={"next_rotation_time": first, "rotation_period": dt.timedelta(hours=1)},
    )
    assert store.fire_due_rotations() == 0

    clock.advance(3 * 3600)  # three periods late: one event, next time in the future
    assert store.fire_due_rotations() == 1
    rotated = store.get_secret(types.GetSecretRequest(name=SECRET))
    assert rotated.rotation.next_rotation_time == first + dt.timedelta(hours=3)
    assert rotated.rotation.next_rotation_time > clock.now()
    assert rotated.etag != secret.etag
    assert published.events[-1][0] == "SECRET_ROTATE"
    assert store.fire_due_rotations() == 0


def test_rotation_without_a_period_fires_once_and_is_removed(store: SecretStore, clock: Clock) -> None:
    create(
        store, topics=[{"name": TOPIC}], rotation={"next_rotation_time": clock.now() + dt.timedelta(hours=1)}
    )
    clock.advance(3600)
    assert store.fire_due_rotations() == 1
    assert "rotation" not in store.get_secret(types.GetSecretRequest(name=SECRET))
    clock.advance(3600)
    assert store.fire_due_rotations() == 0


def test_expired_secret_is_deleted_with_an_expiration_event(
    store: SecretStore, clock: Clock, published: RecordingPublisher
) -> None:
    create(store, topics=[{"name": TOPIC}], ttl=dt.timedelta(minutes=5))
    assert store.apply_due_lifecycle() == 0
    clock.advance(301)
    assert store.apply_due_lifecycle() == 1
    with pytest.raises(EmulatorError) as error:
        store.get_secret(types.GetSecretRequest(name=SECRET))
    assert error.value.message == f"Secret [{SECRET}] not found."
    assert published.events[-1] == ("SECRET_DELETE", SECRET, None, {"delete_type": "EXPIRATION"})


def test_scheduled_destruction_completes_when_due(
    store: SecretStore, clock: Clock, published: RecordingPublisher
) -> None:
    create(store, topics=[{"name": TOPIC}], version_destroy_ttl=dt.timedelta(days=1))
    add(store, b"v1")
    version = f"{SECRET}/versions/1"
    store.destroy_secret_version(types.DestroySecretVersionRequest(name=version))
    assert published.events[-1][0] == "SECRET_VERSION_DESTROY_SCHEDULED"

    clock.advance(86400)
    assert store.apply_due_lifecycle() == 1
    destroyed = store.get_secret_version(types.GetSecretVersionRequest(name=version))
    assert destroyed.state == types.SecretVersion.State.DESTROYED
    assert "scheduled_destroy_time" not in destroyed
    assert published.events[-1][0] == "SECRET_VERSION_DESTROY"


def test_on_change_runs_after_mutations_only(store: SecretStore) -> None:
    changes: list[int] = []
    store.on_change = lambda: changes.append(1)
    create(store)
    add(store, b"v1")
    store.get_secret(types.GetSecretRequest(name=SECRET))
    store.access_secret_version(types.AccessSecretVersionRequest(name=f"{SECRET}/versions/1"))
    store.list_secrets(types.ListSecretsRequest(parent="projects/p"))
    with pytest.raises(EmulatorError):
        add(store, b"")
    assert len(changes) == 2


def test_dump_is_json_and_load_restores_everything(store: SecretStore, clock: Clock) -> None:
    create(store, labels={"team": "x"})
    for value in (b"v1", b"\x00\xffbinary", b"v3"):
        add(store, value)
    store.disable_secret_version(types.DisableSecretVersionRequest(name=f"{SECRET}/versions/2"))
    store.destroy_secret_version(types.DestroySecretVersionRequest(name=f"{SECRET}/versions/3"))
    dumped = json.loads(json.dumps(store.dump()))

    restored = SecretStore(clock, RecordingPublisher())
    restored.load(dumped)

    assert restored.dump() == dumped
    access = restored.access_secret_version(types.AccessSecretVersionRequest(name=f"{SECRET}/versions/1"))
    assert access.payload.data == b"v1"
    assert restored.get_secret(types.GetSecretRequest(name=SECRET)) == store.get_secret(
        types.GetSecretRequest(name=SECRET)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "not an emulator data file"),
        ({"format": "secrets-agent-emulator/1", "secrets": [{"secret": {"name": "bad name"}}]}, "secrets[0]"),
        ({"format": "secrets-agent-emulator/1", "secrets": [{"versions": []}]}, "secrets[0]"),
    ],
)
def test_load_refuses_malformed_data(store: SecretStore, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        store.load(data)
