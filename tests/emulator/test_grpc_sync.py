"""The emulator over gRPC with the official sync client: every method, the service's errors in its words."""

from __future__ import annotations

import datetime as dt
from typing import Any

import google_crc32c
import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1
from google.protobuf import duration_pb2, field_mask_pb2

from agent_emulator.server import EmulatorEndpoints
from agent_emulator.store import ETAG_MISMATCH

Client = secretmanager_v1.SecretManagerServiceClient
State = secretmanager_v1.SecretVersion.State
PROJECT = "projects/test-project"
REGIONAL = "projects/test-project/locations/europe-west1"
TOPIC = "projects/test-project/topics/secret-events"


def create(client: Client, secret_id: str, parent: str = PROJECT, **secret: Any) -> secretmanager_v1.Secret:
    return client.create_secret(parent=parent, secret_id=secret_id, secret=secret)


def add(client: Client, secret: str, data: bytes) -> secretmanager_v1.SecretVersion:
    return client.add_secret_version(parent=secret, payload={"data": data})


def secret_with_versions(client: Client, secret_id: str, *values: bytes) -> str:
    name = create(client, secret_id).name
    for value in values:
        add(client, name, value)
    return name


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# ---- secrets -----------------------------------------------------------------------------------


def test_create_secret_sets_name_create_time_etag_and_automatic_replication(client: Client) -> None:
    before = dt.datetime.now(dt.UTC)
    secret = create(client, "db-password", labels={"team": "payments"})

    assert secret.name == f"{PROJECT}/secrets/db-password"
    assert before - dt.timedelta(seconds=1) <= secret.create_time <= dt.datetime.now(dt.UTC)
    assert secret.etag.startswith('"')
    assert secret.etag.endswith('"')
    assert len(secret.etag) > 2
    assert "automatic" in secret.replication
    assert dict(secret.labels) == {"team": "payments"}
    assert client.get_secret(name=secret.name) == secret


def test_create_keeps_user_managed_replication(client: Client) -> None:
    replication = {"user_managed": {"replicas": [{"location": "europe-west1"}, {"location": "us-east1"}]}}
    secret = create(client, "replicated", replication=replication)
    version = add(client, secret.name, b"x")

    assert [r.location for r in secret.replication.user_managed.replicas] == ["europe-west1", "us-east1"]
    assert [r.location for r in version.replication_status.user_managed.replicas] == [
        "europe-west1",
        "us-east1",
    ]


def test_duplicate_secret_is_already_exists(client: Client) -> None:
    create(client, "dup")
    with pytest.raises(gexc.AlreadyExists) as error:
        create(client, "dup")
    assert error.value.message == f"Secret [{PROJECT}/secrets/dup] already exists."


@pytest.mark.parametrize("secret_id", ["db.password", "a/b", "x" * 256, "spaces here", "ü"])
def test_invalid_secret_id_is_invalid_argument(client: Client, secret_id: str) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, secret_id)
    assert "does not match the expected format [projects/*/secrets/*]" in error.value.message


def test_secret_id_of_255_characters_is_accepted(client: Client) -> None:
    assert create(client, "a" * 255).name.endswith("/" + "a" * 255)


@pytest.mark.parametrize(
    ("call", "name", "expected"),
    [
        ("get_secret", "projects/p/secret/s", "[projects/*/secrets/*]"),
        ("get_secret", "projects/p/secrets/s/versions/1", "[projects/*/secrets/*]"),
        ("get_secret", "projects//secrets/s", "[projects/*/secrets/*]"),
        ("get_secret", "projects/p/locations/europe-west1/secrets/a.b", "[projects/*/locations/*/secrets/*]"),
        ("access_secret_version", "projects/p/secrets/s", "[projects/*/secrets/*/versions/*]"),
        ("access_secret_version", "projects/p/secrets/s/versions/", "[projects/*/secrets/*/versions/*]"),
        ("access_secret_version", "projects/p/secrets/s/versions/1.5", "[projects/*/secrets/*/versions/*]"),
        ("get_secret_version", "projects/p/secrets/s/versions/-1", "[projects/*/secrets/*/versions/*]"),
    ],
)
def test_malformed_names_are_invalid_argument_in_the_service_words(
    client: Client, call: str, name: str, expected: str
) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        getattr(client, call)(name=name)
    assert error.value.message == (
        f"The provided Secret ID [{name}] does not match the expected format {expected}"
    )


def test_malformed_parent_is_invalid_argument(client: Client) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        client.create_secret(parent="organizations/1", secret_id="s", secret={})
    assert "does not match the expected format [projects/*]" in error.value.message


def test_missing_secret_is_not_found_in_the_service_words(client: Client) -> None:
    name = f"{PROJECT}/secrets/nope"
    for call in (client.get_secret, client.delete_secret):
        with pytest.raises(gexc.NotFound) as error:
            call(name=name)
        assert error.value.message == f"Secret [{name}] not found."
    with pytest.raises(gexc.NotFound) as error:
        add(client, name, b"x")
    assert error.value.message == f"Secret [{name}] not found."
    with pytest.raises(gexc.NotFound):
        list(client.list_secret_versions(parent=name))


def test_delete_secret_removes_it_and_its_versions(client: Client) -> None:
    name = secret_with_versions(client, "gone", b"v1")
    client.delete_secret(name=name)

    with pytest.raises(gexc.NotFound):
        client.get_secret(name=name)
    with pytest.raises(gexc.NotFound) as error:
        client.access_secret_version(name=f"{name}/versions/1")
    assert error.value.message == f"Secret Version [{name}/versions/1] not found."
    assert list(client.list_secrets(parent=PROJECT)) == []
    # The id is free again, and numbering starts over.
    assert add(client, create(client, "gone").name, b"new").name == f"{name}/versions/1"


# ---- versions ----------------------------------------------------------------------------------


def test_versions_are_numbered_from_one_enabled_with_create_time(client: Client) -> None:
    name = create(client, "numbered").name
    versions = [add(client, name, f"v{i}".encode()) for i in range(1, 4)]

    assert [v.name for v in versions] == [f"{name}/versions/{i}" for i in (1, 2, 3)]
    assert all(v.state == State.ENABLED for v in versions)
    assert all(v.create_time <= dt.datetime.now(dt.UTC) for v in versions)
    assert len({v.etag for v in versions}) == 3


def test_access_returns_data_and_a_crc32c_that_matches(client: Client) -> None:
    name = create(client, "blob").name
    data = bytes(range(256)) * 3
    add(client, name, data)

    response = client.access_secret_version(name=f"{name}/versions/1")

    assert response.name == f"{name}/versions/1"
    assert response.payload.data == data
    assert response.payload.data_crc32c == google_crc32c.value(data)


def test_client_sent_checksum_is_recorded_and_verified(client: Client) -> None:
    name = create(client, "checked").name
    good = client.add_secret_version(
        parent=name, payload={"data": b"abc", "data_crc32c": google_crc32c.value(b"abc")}
    )
    assert good.client_specified_payload_checksum is True
    assert add(client, name, b"abc").client_specified_payload_checksum is False

    with pytest.raises(gexc.InvalidArgument) as error:
        client.add_secret_version(
            parent=name, payload={"data": b"abc", "data_crc32c": google_crc32c.value(b"abd")}
        )
    assert error.value.message == "Provided SecretPayload.data crc32c does not match calculated crc32c."
    assert [v.name.rsplit("/", 1)[1] for v in client.list_secret_versions(parent=name)] == ["2", "1"]


def test_payload_limits(client: Client) -> None:
    name = create(client, "sized").name
    assert add(client, name, b"x" * 65536).state == State.ENABLED

    with pytest.raises(gexc.InvalidArgument) as error:
        add(client, name, b"x" * 65537)
    assert error.value.message == "SecretPayload.data must not be larger than 65536 bytes."
    with pytest.raises(gexc.InvalidArgument) as error:
        add(client, name, b"")
    assert error.value.message == "SecretPayload.data must not be empty."


def test_latest_is_the_newest_version_whatever_its_state(client: Client) -> None:
    name = secret_with_versions(client, "rotating", b"v1", b"v2")
    assert client.access_secret_version(name=f"{name}/versions/latest").payload.data == b"v2"

    client.disable_secret_version(name=f"{name}/versions/2")
    with pytest.raises(gexc.FailedPrecondition) as error:
        client.access_secret_version(name=f"{name}/versions/latest")
    assert error.value.message == f"Secret Version [{name}/versions/2] is in DISABLED state."
    # Get still answers, with the resolved number in the name.
    latest = client.get_secret_version(name=f"{name}/versions/latest")
    assert latest.name == f"{name}/versions/2"
    assert latest.state == State.DISABLED
    assert client.access_secret_version(name=f"{name}/versions/1").payload.data == b"v1"

    add(client, name, b"v3")
    client.destroy_secret_version(name=f"{name}/versions/3")
    with pytest.raises(gexc.FailedPrecondition) as error:
        client.access_secret_version(name=f"{name}/versions/latest")
    assert error.value.message == f"Secret Version [{name}/versions/3] is in DESTROYED state."


def test_latest_of_a_secret_without_versions_is_not_found(client: Client) -> None:
    name = create(client, "empty").name
    for secret in (name, f"{PROJECT}/secrets/missing"):
        with pytest.raises(gexc.NotFound) as error:
            client.access_secret_version(name=f"{secret}/versions/latest")
        assert error.value.message == f"Secret [{secret}] not found or has no versions."


def test_missing_version_is_not_found(client: Client) -> None:
    name = secret_with_versions(client, "one", b"v1")
    for call in (client.get_secret_version, client.access_secret_version, client.enable_secret_version):
        with pytest.raises(gexc.NotFound) as error:
            call(name=f"{name}/versions/7")
        assert error.value.message == f"Secret Version [{name}/versions/7] not found."


def test_disable_enable_destroy_state_machine(client: Client) -> None:
    name = secret_with_versions(client, "states", b"v1")
    version = f"{name}/versions/1"

    disabled = client.disable_secret_version(name=version)
    assert disabled.state == State.DISABLED
    enabled = client.enable_secret_version(name=version)
    assert enabled.state == State.ENABLED
    assert enabled.etag != disabled.etag

    destroyed = client.destroy_secret_version(name=version)
    assert destroyed.state == State.DESTROYED
    assert destroyed.destroy_time >= destroyed.create_time
    assert client.get_secret_version(name=version).state == State.DESTROYED
    for call in (client.enable_secret_version, client.disable_secret_version, client.destroy_secret_version):
        with pytest.raises(gexc.FailedPrecondition) as error:
            call(name=version)
        assert error.value.message == "SecretVersion.state is already DESTROYED"


def test_state_changes_take_version_numbers_only(client: Client) -> None:
    name = secret_with_versions(client, "numbers-only", b"v1")
    with pytest.raises(gexc.InvalidArgument) as error:
        client.disable_secret_version(name=f"{name}/versions/latest")
    assert "does not match the expected format [projects/*/secrets/*/versions/*]" in error.value.message


def test_delayed_destruction_disables_and_enabling_cancels_it(client: Client) -> None:
    name = create(client, "delayed", version_destroy_ttl=duration_pb2.Duration(seconds=86400)).name
    add(client, name, b"v1")

    scheduled = client.destroy_secret_version(name=f"{name}/versions/1")
    assert scheduled.state == State.DISABLED
    assert scheduled.scheduled_destroy_time > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    with pytest.raises(gexc.FailedPrecondition) as error:
        client.destroy_secret_version(name=f"{name}/versions/1")
    assert error.value.message == "SecretVersion is already scheduled for DESTRUCTION."

    restored = client.enable_secret_version(name=f"{name}/versions/1")
    assert restored.state == State.ENABLED
    assert "scheduled_destroy_time" not in restored
    assert client.access_secret_version(name=f"{name}/versions/1").payload.data == b"v1"


# ---- aliases -----------------------------------------------------------------------------------


def test_aliases_resolve_in_get_and_access(client: Client) -> None:
    name = secret_with_versions(client, "aliased", b"v1", b"v2", b"v3")
    client.update_secret(
        secret={"name": name, "version_aliases": {"current": 2, "Previous": 1}},
        update_mask=mask("version_aliases"),
    )

    accessed = client.access_secret_version(name=f"{name}/versions/current")
    assert accessed.name == f"{name}/versions/2"
    assert accessed.payload.data == b"v2"
    assert client.get_secret_version(name=f"{name}/versions/Previous").name == f"{name}/versions/1"
    with pytest.raises(gexc.NotFound) as error:
        client.access_secret_version(name=f"{name}/versions/previous")  # aliases are case-sensitive
    assert error.value.message == f"Secret [{name}] has no alias [previous]"


def test_aliases_must_point_at_existing_versions_and_be_valid_names(client: Client) -> None:
    name = secret_with_versions(client, "bad-alias", b"v1")
    with pytest.raises(gexc.InvalidArgument) as error:
        client.update_secret(
            secret={"name": name, "version_aliases": {"next": 2}}, update_mask=mask("version_aliases")
        )
    assert error.value.message == "Aliases cannot be assigned to versions that don't exist"
    for alias in ("latest", "NEW", "1abc", "has.dot"):
        with pytest.raises(gexc.InvalidArgument) as error:
            client.update_secret(
                secret={"name": name, "version_aliases": {alias: 1}}, update_mask=mask("version_aliases")
            )
        assert error.value.message.startswith(f"[{alias}] must follow pattern")
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, "born-with-alias", version_aliases={"current": 1})
    assert error.value.message == "Aliases cannot be assigned to versions that don't exist"


def test_destroying_a_version_drops_its_data_and_its_aliases(client: Client) -> None:
    name = secret_with_versions(client, "destroyed", b"v1", b"v2")
    client.update_secret(
        secret={"name": name, "version_aliases": {"old": 1, "also-old": 1, "current": 2}},
        update_mask=mask("version_aliases"),
    )
    etag_before = client.get_secret(name=name).etag

    client.destroy_secret_version(name=f"{name}/versions/1")

    secret = client.get_secret(name=name)
    assert dict(secret.version_aliases) == {"current": 2}
    assert secret.etag != etag_before
    with pytest.raises(gexc.FailedPrecondition):
        client.access_secret_version(name=f"{name}/versions/1")
    with pytest.raises(gexc.NotFound):
        client.access_secret_version(name=f"{name}/versions/old")


# ---- etags -------------------------------------------------------------------------------------


def test_secret_etag_guards_update_and_delete(client: Client) -> None:
    secret = create(client, "guarded")
    updated = client.update_secret(
        secret={"name": secret.name, "etag": secret.etag, "labels": {"a": "b"}}, update_mask=mask("labels")
    )
    assert updated.etag != secret.etag

    for attempt in (
        lambda: client.update_secret(
            secret={"name": secret.name, "etag": secret.etag, "labels": {}}, update_mask=mask("labels")
        ),
        lambda: client.delete_secret(request={"name": secret.name, "etag": secret.etag}),
    ):
        with pytest.raises(gexc.FailedPrecondition) as error:
            attempt()
        assert error.value.message == ETAG_MISMATCH
    assert dict(client.get_secret(name=secret.name).labels) == {"a": "b"}

    client.delete_secret(request={"name": secret.name, "etag": updated.etag})
    with pytest.raises(gexc.NotFound):
        client.get_secret(name=secret.name)


def test_adding_a_version_leaves_the_secret_etag_alone(client: Client) -> None:
    secret = create(client, "stable-etag")
    add(client, secret.name, b"v1")
    assert client.get_secret(name=secret.name).etag == secret.etag


@pytest.mark.parametrize(
    "method", ["enable_secret_version", "disable_secret_version", "destroy_secret_version"]
)
def test_version_etag_guards_state_changes(client: Client, method: str) -> None:
    name = secret_with_versions(client, "version-etag", b"v1")
    version = client.get_secret_version(name=f"{name}/versions/1")
    moved = client.disable_secret_version(request={"name": version.name, "etag": version.etag})
    assert moved.etag != version.etag

    with pytest.raises(gexc.FailedPrecondition) as error:
        getattr(client, method)(request={"name": version.name, "etag": version.etag})
    assert error.value.message == ETAG_MISMATCH

    done = getattr(client, method)(request={"name": version.name, "etag": moved.etag})
    assert done.etag != moved.etag


# ---- update masks ------------------------------------------------------------------------------


def test_update_changes_only_the_masked_fields(client: Client) -> None:
    secret = create(client, "masked", labels={"a": "1"}, annotations={"owner": "me"})
    updated = client.update_secret(
        secret={"name": secret.name, "labels": {"b": "2"}, "annotations": {"owner": "you"}},
        update_mask=mask("labels"),
    )
    assert dict(updated.labels) == {"b": "2"}
    assert dict(updated.annotations) == {"owner": "me"}
    assert updated.create_time == secret.create_time


@pytest.mark.parametrize(
    ("path", "sent", "check"),
    [
        ("labels", {"labels": {"env": "prod"}}, lambda s: dict(s.labels) == {"env": "prod"}),
        ("labels", {}, lambda s: dict(s.labels) == {}),
        ("annotations", {"annotations": {"note": "x"}}, lambda s: dict(s.annotations) == {"note": "x"}),
        ("topics", {"topics": [{"name": TOPIC}]}, lambda s: [t.name for t in s.topics] == [TOPIC]),
        (
            "version_destroy_ttl",
            {"version_destroy_ttl": duration_pb2.Duration(seconds=172800)},
            lambda s: s.version_destroy_ttl == dt.timedelta(days=2),
        ),
        (
            "ttl",
            {"ttl": duration_pb2.Duration(seconds=3600)},
            lambda s: (
                dt.timedelta(minutes=59) < s.expire_time - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
            ),
        ),
        ("expire_time", {}, lambda s: "expire_time" not in s),
    ],
)
def test_each_simple_mask_path(client: Client, path: str, sent: dict[str, Any], check: Any) -> None:
    secret = create(client, "paths", labels={"old": "1"}, annotations={"old": "1"})
    updated = client.update_secret(secret={"name": secret.name, **sent}, update_mask=mask(path))
    assert check(updated)
    assert check(client.get_secret(name=secret.name))


def test_rotation_mask_paths(client: Client) -> None:
    secret = create(client, "rotated", topics=[{"name": TOPIC}])
    first = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    rotation = {"next_rotation_time": first, "rotation_period": duration_pb2.Duration(seconds=7200)}

    updated = client.update_secret(
        secret={"name": secret.name, "rotation": rotation}, update_mask=mask("rotation")
    )
    assert updated.rotation.next_rotation_time == first
    assert updated.rotation.rotation_period == dt.timedelta(hours=2)

    later = first + dt.timedelta(days=1)
    updated = client.update_secret(
        secret={"name": secret.name, "rotation": {"next_rotation_time": later}},
        update_mask=mask("rotation.next_rotation_time"),
    )
    assert updated.rotation.next_rotation_time == later
    assert updated.rotation.rotation_period == dt.timedelta(hours=2)

    updated = client.update_secret(
        secret={"name": secret.name, "rotation": {"rotation_period": duration_pb2.Duration(seconds=86400)}},
        update_mask=mask("rotation.rotationPeriod"),  # lowerCamelCase paths are accepted too
    )
    assert updated.rotation.rotation_period == dt.timedelta(days=1)

    cleared = client.update_secret(secret={"name": secret.name}, update_mask=mask("rotation"))
    assert "rotation" not in cleared


@pytest.mark.parametrize(
    ("secret", "error_type", "message"),
    [
        (
            {
                "rotation": {
                    "next_rotation_time": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                    "rotation_period": duration_pb2.Duration(seconds=3599),
                }
            },
            gexc.InvalidArgument,
            "Rotation period cannot be shorter than [1h].",
        ),
        (
            {"rotation": {"rotation_period": duration_pb2.Duration(seconds=3600)}},
            gexc.FailedPrecondition,
            "Next rotation time must be set while the rotation period is set.",
        ),
        (
            {"rotation": {"next_rotation_time": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)}},
            gexc.InvalidArgument,
            "Next rotation time must be at least [5m] in the future.",
        ),
    ],
)
def test_rotation_rules(
    client: Client, secret: dict[str, Any], error_type: type[Exception], message: str
) -> None:
    with pytest.raises(error_type) as error:
        create(client, "bad-rotation", topics=[{"name": TOPIC}], **secret)
    assert error.value.message == message  # type: ignore[attr-defined]


def test_rotation_needs_a_topic(client: Client) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, "no-topic", rotation={"next_rotation_time": soon})
    assert error.value.message == "There must be at least one topic configured when a Rotation policy is set."
    secret = create(client, "topic", topics=[{"name": TOPIC}], rotation={"next_rotation_time": soon})
    with pytest.raises(gexc.InvalidArgument):
        client.update_secret(secret={"name": secret.name}, update_mask=mask("topics"))


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ((), None),
        (("*",), "Request contains an invalid argument."),
        (("labels.team",), "Request contains an invalid argument."),
        (("bogus",), "Request contains an invalid argument."),
        (("secret_type",), "Field 'secret_type' is immutable and cannot be updated."),
    ],
)
def test_update_mask_paths_the_service_refuses(
    client: Client, paths: tuple[str, ...], message: str | None
) -> None:
    secret = create(client, "refusals", labels={"keep": "me"})
    if message is None:
        # An empty mask changes nothing but the etag.
        updated = client.update_secret(secret={"name": secret.name, "labels": {}}, update_mask=mask())
        assert dict(updated.labels) == {"keep": "me"}
        assert updated.etag != secret.etag
        return
    with pytest.raises(gexc.InvalidArgument) as error:
        client.update_secret(secret={"name": secret.name, "labels": {}}, update_mask=mask(*paths))
    assert error.value.message == message


def test_update_without_a_mask_is_refused(client: Client) -> None:
    secret = create(client, "no-mask")
    with pytest.raises(gexc.InvalidArgument) as error:
        client.update_secret(request={"secret": {"name": secret.name, "labels": {"a": "b"}}})
    assert error.value.message == "Field [update_mask] is required."


def test_replication_cannot_change(client: Client) -> None:
    secret = create(client, "fixed-replication")
    same = client.update_secret(
        secret={"name": secret.name, "replication": {"automatic": {}}}, update_mask=mask("replication")
    )
    assert "automatic" in same.replication
    with pytest.raises(gexc.InvalidArgument) as error:
        client.update_secret(
            secret={
                "name": secret.name,
                "replication": {"user_managed": {"replicas": [{"location": "us-east1"}]}},
            },
            update_mask=mask("replication"),
        )
    assert "Updating secret replication is not supported." in error.value.message


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"Team": "x"}, 'Invalid field "labels"; key "Team" does not conform to regular expression'),
        ({"team": "X"}, 'Invalid field "labels.team"; value "X" does not conform to regular expression'),
        (
            {f"k{i}": "v" for i in range(65)},
            'Invalid field "labels"; at most 64 entries allowed but found 65',
        ),
    ],
)
def test_label_rules(client: Client, labels: dict[str, str], message: str) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, "labelled", labels=labels)
    assert error.value.message.startswith(message)


def test_topic_rules(client: Client) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, "topics", topics=[{"name": "secret-events"}])
    assert error.value.message == "Failed to Publish to topic [secret-events], got an error from Pub/Sub."
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, "topics", topics=[{"name": TOPIC}, {"name": TOPIC}])
    assert error.value.message == "Topics must have distinct names."


# ---- regional secrets --------------------------------------------------------------------------


def test_regional_secrets_work_end_to_end_and_are_listed_apart(client: Client) -> None:
    regional = create(client, "eu-db", parent=REGIONAL)
    create(client, "global-db")
    add(client, regional.name, b"eu-value")

    assert regional.name == f"{REGIONAL}/secrets/eu-db"
    assert "replication" not in regional
    accessed = client.access_secret_version(name=f"{regional.name}/versions/latest")
    assert accessed.name == f"{regional.name}/versions/1"
    assert accessed.payload.data == b"eu-value"
    assert [s.name for s in client.list_secrets(parent=REGIONAL)] == [regional.name]
    assert [s.name for s in client.list_secrets(parent=PROJECT)] == [f"{PROJECT}/secrets/global-db"]
    assert client.get_secret(name=regional.name) == regional
    with pytest.raises(gexc.NotFound):
        client.get_secret(name=f"{PROJECT}/secrets/eu-db")


def test_regional_secrets_take_no_replication(client: Client) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        create(client, "eu", parent=REGIONAL, replication={"automatic": {}})
    assert error.value.message == "Secret.replication should not be provided."


def test_project_numbers_and_ids_are_both_names(client: Client) -> None:
    by_number = create(client, "s", parent="projects/123456789012")
    assert by_number.name == "projects/123456789012/secrets/s"
    with pytest.raises(gexc.NotFound):
        client.get_secret(name=f"{PROJECT}/secrets/s")


# ---- listing -----------------------------------------------------------------------------------


def test_list_secrets_pages_through_everything_in_name_order(client: Client) -> None:
    for secret_id in ("e", "c", "a", "d", "b"):
        create(client, secret_id)

    first = client.list_secrets(request={"parent": PROJECT, "page_size": 2})
    page = next(iter(first.pages))
    assert [s.name.rsplit("/", 1)[1] for s in page.secrets] == ["a", "b"]
    assert page.next_page_token
    assert page.total_size == 5

    pager = client.list_secrets(request={"parent": PROJECT, "page_size": 2})
    assert [s.name.rsplit("/", 1)[1] for s in pager] == ["a", "b", "c", "d", "e"]
    assert sum(1 for _ in client.list_secrets(request={"parent": PROJECT, "page_size": 2}).pages) == 3


def test_list_versions_pages_newest_first(client: Client) -> None:
    name = secret_with_versions(client, "many", *(f"v{i}".encode() for i in range(1, 6)))
    pager = client.list_secret_versions(request={"parent": name, "page_size": 2})
    assert [v.name.rsplit("/", 1)[1] for v in pager] == ["5", "4", "3", "2", "1"]
    page = client.list_secret_versions(request={"parent": name, "page_size": 2}).pages
    first = next(iter(page))
    assert len(first.versions) == 2
    assert first.total_size == 5
    assert first.next_page_token


def test_invalid_page_token_is_invalid_argument(client: Client) -> None:
    create(client, "a")
    for token in ("garbage!", "eyJzIjoiMCIsImEiOiJhIn0"):
        with pytest.raises(gexc.InvalidArgument) as error:
            list(client.list_secrets(request={"parent": PROJECT, "page_token": token}))
        assert error.value.message == "The page token is invalid."


def test_page_token_of_one_listing_is_refused_by_another(client: Client) -> None:
    for secret_id in ("a", "b", "c"):
        create(client, secret_id)
    page = next(iter(client.list_secrets(request={"parent": PROJECT, "page_size": 1}).pages))
    with pytest.raises(gexc.InvalidArgument):
        list(
            client.list_secrets(
                request={"parent": PROJECT, "page_token": page.next_page_token, "filter": "name:a"}
            )
        )


def test_version_state_filters(client: Client) -> None:
    name = secret_with_versions(client, "filtered", b"1", b"2", b"3", b"4")
    client.disable_secret_version(name=f"{name}/versions/2")
    client.destroy_secret_version(name=f"{name}/versions/3")

    def numbers(query: str) -> list[str]:
        return [
            v.name.rsplit("/", 1)[1]
            for v in client.list_secret_versions(request={"parent": name, "filter": query})
        ]

    assert numbers("state:ENABLED") == ["4", "1"]
    assert numbers("state:DISABLED") == ["2"]
    assert numbers("state:DESTROYED") == ["3"]
    assert numbers("state:enabled OR state:DESTROYED") == ["4", "3", "1"]
    assert numbers("NOT state:ENABLED") == ["3", "2"]
    response = client.list_secret_versions(request={"parent": name, "filter": "state:ENABLED"})
    assert next(iter(response.pages)).total_size == 0  # as documented: 0 when a filter is set


def test_secret_filters(client: Client) -> None:
    create(client, "prod-db", labels={"env": "prod", "team": "a"})
    create(client, "prod-api", labels={"env": "prod"})
    create(client, "dev-db", labels={"env": "dev"})

    def names(query: str) -> list[str]:
        return [
            s.name.rsplit("/", 1)[1]
            for s in client.list_secrets(request={"parent": PROJECT, "filter": query})
        ]

    assert names("labels.env=prod") == ["prod-api", "prod-db"]
    assert names("name:db") == ["dev-db", "prod-db"]
    assert names("labels.team:*") == ["prod-db"]
    assert names("labels.env=prod AND name:api") == ["prod-api"]
    assert names("name:api OR name:dev") == ["dev-db", "prod-api"]
    assert names("-labels.env=prod") == ["dev-db"]
    assert names(f"create_time>{(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()}") == [
        "dev-db",
        "prod-api",
        "prod-db",
    ]


@pytest.mark.parametrize("query", ["colour=red", "labels.env=", "(name:a", 'name:"unterminated'])
def test_malformed_filters_are_invalid_argument(client: Client, query: str) -> None:
    with pytest.raises(gexc.InvalidArgument) as error:
        list(client.list_secrets(request={"parent": PROJECT, "filter": query}))
    assert error.value.message.startswith("Invalid filter")


# ---- what the emulator does not implement ------------------------------------------------------


def test_other_methods_are_unimplemented(client: Client) -> None:
    name = create(client, "iam").name
    with pytest.raises(gexc.MethodNotImplemented):
        client.get_iam_policy(request={"resource": name})
    with pytest.raises(gexc.MethodNotImplemented):
        client.set_iam_policy(request={"resource": name, "policy": {}})
    with pytest.raises(gexc.MethodNotImplemented):
        client.test_iam_permissions(request={"resource": name, "permissions": ["secretmanager.secrets.get"]})


def test_undecodable_request_bytes_are_invalid_argument(emulator: EmulatorEndpoints) -> None:
    with grpc.insecure_channel(emulator.grpc_target) as channel:
        get_secret = channel.unary_unary("/google.cloud.secretmanager.v1.SecretManagerService/GetSecret")
        with pytest.raises(grpc.RpcError) as error:
            get_secret(b"\xff\xff\xff")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
