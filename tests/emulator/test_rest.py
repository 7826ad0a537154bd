"""The official client over REST/JSON (``transport="rest"``) against the emulator: every method, global and
regional names, etags, aliases, CRC32C, errors as the client raises them, and one store shared with gRPC."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable
from typing import Any

import google_crc32c
import pytest
from google.api_core import exceptions
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1 import types
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import rest_base

from agent_emulator.rest_routes import ROUTES

Client = secretmanager_v1.SecretManagerServiceClient
State = types.SecretVersion.State

PROJECT = "projects/rest-project"
REGION = "projects/rest-project/locations/europe-west1"


def create(client: Client, secret_id: str, parent: str = PROJECT, **fields: Any) -> types.Secret:
    """A secret as a user creates it: automatic replication for global secrets, none for regional ones."""
    if "/locations/" not in parent:
        fields.setdefault("replication", {"automatic": {}})
    return client.create_secret(request={"parent": parent, "secret_id": secret_id, "secret": fields})


def add(client: Client, secret: str, data: bytes) -> types.SecretVersion:
    """A version with the client-side checksum, as Google recommends."""
    payload = {"data": data, "data_crc32c": google_crc32c.value(data)}
    return client.add_secret_version(request={"parent": secret, "payload": payload})


def rest_error(error: exceptions.GoogleAPICallError) -> tuple[str, str]:
    """(status, message) from the error JSON the emulator sent."""
    assert error.response is not None
    body = error.response.json()["error"]
    assert body["code"] == error.response.status_code
    return body["status"], body["message"]


def grpc_error(error: exceptions.GoogleAPICallError) -> tuple[str, str]:
    assert error.grpc_status_code is not None
    return error.grpc_status_code.name, error.message


def raised(call: Callable[[], Any]) -> exceptions.GoogleAPICallError:
    with pytest.raises(exceptions.GoogleAPICallError) as info:
        call()
    return info.value


# ---- secrets ---------------------------------------------------------------------------------------------


def test_create_then_get_returns_the_same_secret(rest: Client) -> None:
    before = dt.datetime.now(dt.UTC)
    created = create(rest, "db-password", labels={"env": "prod"}, annotations={"owner": "team-a"})

    assert created.name == f"{PROJECT}/secrets/db-password"
    assert dict(created.labels) == {"env": "prod"}
    assert dict(created.annotations) == {"owner": "team-a"}
    assert "automatic" in created.replication
    assert created.create_time >= before - dt.timedelta(seconds=5)
    assert created.etag
    fetched = rest.get_secret(name=created.name)
    assert types.Secret.serialize(fetched) == types.Secret.serialize(created)


def test_list_secrets_in_pages_of_two(rest: Client) -> None:
    ids = [f"s{i}" for i in range(5)]
    for secret_id in ids:
        create(rest, secret_id)
    create(rest, "elsewhere", parent="projects/other-project")

    pages = list(rest.list_secrets(request={"parent": PROJECT, "page_size": 2}).pages)

    assert [len(page.secrets) for page in pages] == [2, 2, 1]
    assert pages[0].next_page_token
    assert not pages[-1].next_page_token
    listed = [secret.name for page in pages for secret in page.secrets]
    assert sorted(listed) == [f"{PROJECT}/secrets/{i}" for i in ids]


def test_list_secrets_with_a_filter(rest: Client) -> None:
    create(rest, "api-key", labels={"env": "prod"})
    create(rest, "db-password", labels={"env": "prod"})
    create(rest, "test-token", labels={"env": "dev"})

    found = rest.list_secrets(request={"parent": PROJECT, "filter": "labels.env=prod"})

    assert sorted(s.name.rsplit("/", 1)[1] for s in found) == ["api-key", "db-password"]


def test_update_changes_only_the_masked_fields(rest: Client) -> None:
    created = create(rest, "s", labels={"a": "1"}, annotations={"keep": "me"})

    updated = rest.update_secret(
        request={
            "secret": {"name": created.name, "labels": {"b": "2"}, "annotations": {"dropped": "x"}},
            "update_mask": {"paths": ["labels"]},
        }
    )

    assert dict(updated.labels) == {"b": "2"}
    assert dict(updated.annotations) == {"keep": "me"}
    assert updated.etag != created.etag
    assert dict(rest.get_secret(name=created.name).labels) == {"b": "2"}


def test_update_with_a_stale_etag_fails_as_over_grpc(rest: Client, client: Client) -> None:
    created = create(rest, "s")
    rest.update_secret(
        request={"secret": {"name": created.name, "labels": {"v": "1"}}, "update_mask": {"paths": ["labels"]}}
    )
    stale = {
        "secret": {"name": created.name, "labels": {"v": "2"}, "etag": created.etag},
        "update_mask": {"paths": ["labels"]},
    }

    over_rest = raised(lambda: rest.update_secret(request=stale))
    over_grpc = raised(lambda: client.update_secret(request=stale))

    assert isinstance(over_rest, exceptions.BadRequest)
    assert rest_error(over_rest) == grpc_error(over_grpc)
    assert rest_error(over_rest)[0] == "FAILED_PRECONDITION"
    assert dict(rest.get_secret(name=created.name).labels) == {"v": "1"}


def test_delete_needs_the_current_etag(rest: Client) -> None:
    created = create(rest, "s")
    rest.update_secret(
        request={"secret": {"name": created.name, "labels": {"v": "1"}}, "update_mask": {"paths": ["labels"]}}
    )

    mismatch = raised(lambda: rest.delete_secret(request={"name": created.name, "etag": created.etag}))
    assert rest_error(mismatch)[0] == "FAILED_PRECONDITION"
    current = rest.get_secret(name=created.name)

    rest.delete_secret(request={"name": created.name, "etag": current.etag})

    with pytest.raises(exceptions.NotFound):
        rest.get_secret(name=created.name)


# ---- versions --------------------------------------------------------------------------------------------


def test_access_returns_data_with_its_crc32c_and_the_resolved_version(rest: Client) -> None:
    secret = create(rest, "s").name
    first = add(rest, secret, b"first \x00\xff value")
    second = add(rest, secret, b"second")

    latest = rest.access_secret_version(name=f"{secret}/versions/latest")
    older = rest.access_secret_version(name=first.name)

    assert (first.name, second.name) == (f"{secret}/versions/1", f"{secret}/versions/2")
    assert second.state == State.ENABLED
    assert second.create_time
    assert latest.name == second.name
    assert latest.payload.data == b"second"
    assert latest.payload.data_crc32c == google_crc32c.value(b"second")
    assert older.payload.data == b"first \x00\xff value"
    assert older.payload.data_crc32c == google_crc32c.value(older.payload.data)
    assert rest.get_secret_version(name=f"{secret}/versions/latest").name == second.name


def test_a_wrong_client_checksum_is_refused(rest: Client) -> None:
    secret = create(rest, "s").name
    payload = {"data": b"value", "data_crc32c": google_crc32c.value(b"value") ^ 1}

    error = raised(lambda: rest.add_secret_version(request={"parent": secret, "payload": payload}))

    assert isinstance(error, exceptions.BadRequest)
    assert rest_error(error)[0] == "INVALID_ARGUMENT"
    assert list(rest.list_secret_versions(parent=secret)) == []


def test_list_versions_newest_first_in_pages_and_by_state(rest: Client) -> None:
    secret = create(rest, "s").name
    for value in (b"1", b"2", b"3"):
        add(rest, secret, value)
    rest.disable_secret_version(name=f"{secret}/versions/2")

    pages = list(rest.list_secret_versions(request={"parent": secret, "page_size": 2}).pages)
    enabled = rest.list_secret_versions(request={"parent": secret, "filter": "state:ENABLED"})

    assert [[v.name.rsplit("/", 1)[1] for v in page.versions] for page in pages] == [["3", "2"], ["1"]]
    assert [v.state for page in pages for v in page.versions] == [
        State.ENABLED,
        State.DISABLED,
        State.ENABLED,
    ]
    assert [v.name.rsplit("/", 1)[1] for v in enabled] == ["3", "1"]


def test_aliases_resolve_in_get_and_access(rest: Client) -> None:
    secret = create(rest, "s").name
    add(rest, secret, b"blue")
    add(rest, secret, b"green")

    rest.update_secret(
        request={
            "secret": {"name": secret, "version_aliases": {"current": 1}},
            "update_mask": {"paths": ["version_aliases"]},
        }
    )

    accessed = rest.access_secret_version(name=f"{secret}/versions/current")
    assert (accessed.name, accessed.payload.data) == (f"{secret}/versions/1", b"blue")
    assert rest.get_secret_version(name=f"{secret}/versions/current").name == f"{secret}/versions/1"
    assert dict(rest.get_secret(name=secret).version_aliases) == {"current": 1}


def test_disable_enable_destroy_with_etags(rest: Client, client: Client) -> None:
    secret = create(rest, "s").name
    version = add(rest, secret, b"value")

    rest.disable_secret_version(name=version.name)  # moves the version's etag
    stale = raised(lambda: rest.enable_secret_version(request={"name": version.name, "etag": version.etag}))
    assert rest_error(stale)[0] == "FAILED_PRECONDITION"

    current = rest.get_secret_version(name=version.name)
    assert current.state == State.DISABLED
    disabled_rest = raised(lambda: rest.access_secret_version(name=f"{secret}/versions/latest"))
    disabled_grpc = raised(lambda: client.access_secret_version(name=f"{secret}/versions/latest"))
    assert rest_error(disabled_rest) == grpc_error(disabled_grpc)
    assert rest_error(disabled_rest) == (
        "FAILED_PRECONDITION",
        f"Secret Version [{version.name}] is in DISABLED state.",
    )

    enabled = rest.enable_secret_version(request={"name": version.name, "etag": current.etag})
    assert enabled.state == State.ENABLED
    assert rest.access_secret_version(name=version.name).payload.data == b"value"

    destroyed = rest.destroy_secret_version(request={"name": version.name, "etag": enabled.etag})
    assert destroyed.state == State.DESTROYED
    assert destroyed.destroy_time
    gone = raised(lambda: rest.access_secret_version(name=version.name))
    assert rest_error(gone) == (
        "FAILED_PRECONDITION",
        f"Secret Version [{version.name}] is in DESTROYED state.",
    )


def test_regional_secrets_work_end_to_end(rest: Client) -> None:
    secret = create(rest, "regional", parent=REGION, labels={"tier": "eu"}).name
    version = add(rest, secret, b"eu-value")

    assert secret == f"{REGION}/secrets/regional"
    assert version.name == f"{secret}/versions/1"
    assert rest.access_secret_version(name=f"{secret}/versions/latest").payload.data == b"eu-value"
    assert [s.name for s in rest.list_secrets(parent=REGION)] == [secret]
    assert [s.name for s in rest.list_secrets(parent=PROJECT)] == []
    assert [v.name for v in rest.list_secret_versions(parent=secret)] == [version.name]
    assert rest.disable_secret_version(name=version.name).state == State.DISABLED
    assert rest.enable_secret_version(name=version.name).state == State.ENABLED
    updated = rest.update_secret(
        request={"secret": {"name": secret, "labels": {"tier": "eu2"}}, "update_mask": {"paths": ["labels"]}}
    )
    assert dict(updated.labels) == {"tier": "eu2"}
    assert rest.destroy_secret_version(name=version.name).state == State.DESTROYED
    rest.delete_secret(name=secret)
    with pytest.raises(exceptions.NotFound):
        rest.get_secret(name=secret)


# ---- errors: the same codes and words as over gRPC ------------------------------------------------------

ERROR_CASES: list[tuple[str, type[exceptions.GoogleAPICallError], str, Callable[[Client], Any]]] = [
    ("missing secret", exceptions.NotFound, "NOT_FOUND", lambda c: c.get_secret(name=f"{PROJECT}/secrets/x")),
    (
        "latest of a secret without versions",
        exceptions.NotFound,
        "NOT_FOUND",
        lambda c: c.access_secret_version(name=f"{PROJECT}/secrets/existing/versions/latest"),
    ),
    (
        "missing version",
        exceptions.NotFound,
        "NOT_FOUND",
        lambda c: c.get_secret_version(name=f"{PROJECT}/secrets/existing/versions/7"),
    ),
    (
        "missing alias",
        exceptions.NotFound,
        "NOT_FOUND",
        lambda c: c.access_secret_version(name=f"{PROJECT}/secrets/existing/versions/nope"),
    ),
    (
        "add to a missing secret",
        exceptions.NotFound,
        "NOT_FOUND",
        lambda c: c.add_secret_version(parent=f"{PROJECT}/secrets/x", payload=types.SecretPayload(data=b"v")),
    ),
    ("already exists", exceptions.Conflict, "ALREADY_EXISTS", lambda c: create(c, "existing")),
    ("invalid secret id", exceptions.BadRequest, "INVALID_ARGUMENT", lambda c: create(c, "bad.id")),
    (
        "empty payload",
        exceptions.BadRequest,
        "INVALID_ARGUMENT",
        lambda c: c.add_secret_version(
            parent=f"{PROJECT}/secrets/existing", payload=types.SecretPayload(data=b"")
        ),
    ),
    (
        "update without a mask",
        exceptions.BadRequest,
        "INVALID_ARGUMENT",
        lambda c: c.update_secret(request={"secret": {"name": f"{PROJECT}/secrets/existing"}}),
    ),
]


@pytest.mark.parametrize(
    ("call", "rest_type", "status"),
    [pytest.param(call, kind, status, id=case) for case, kind, status, call in ERROR_CASES],
)
def test_errors_have_the_grpc_status_and_message(
    rest: Client,
    client: Client,
    call: Callable[[Client], Any],
    rest_type: type[exceptions.GoogleAPICallError],
    status: str,
) -> None:
    create(rest, "existing")

    over_rest = raised(lambda: call(rest))
    over_grpc = raised(lambda: call(client))

    # The REST client picks the exception class from the HTTP status (409 -> Conflict, 400 -> BadRequest),
    # the gRPC client from the gRPC code; both carry the service's status and message.
    assert type(over_rest) is rest_type
    assert rest_error(over_rest) == grpc_error(over_grpc)
    assert rest_error(over_rest)[0] == status


def test_methods_the_emulator_does_not_serve_are_unimplemented(rest: Client) -> None:
    secret = create(rest, "s").name

    error = raised(lambda: rest.get_iam_policy(request={"resource": secret}))

    assert isinstance(error, exceptions.MethodNotImplemented)
    assert rest_error(error) == ("UNIMPLEMENTED", "Method GetIamPolicy is not implemented.")


# ---- one store behind both transports ------------------------------------------------------------------


def test_written_over_rest_read_over_grpc(rest: Client, client: Client) -> None:
    secret = create(rest, "shared", labels={"via": "rest"}).name
    add(rest, secret, b"from rest")

    assert dict(client.get_secret(name=secret).labels) == {"via": "rest"}
    accessed = client.access_secret_version(name=f"{secret}/versions/latest")
    assert (accessed.name, accessed.payload.data) == (f"{secret}/versions/1", b"from rest")


def test_written_over_grpc_read_over_rest(rest: Client, client: Client) -> None:
    secret = create(client, "shared", parent=REGION).name
    add(client, secret, b"from grpc")
    client.disable_secret_version(name=f"{secret}/versions/1")
    add(client, secret, b"newer")

    assert [v.state for v in rest.list_secret_versions(parent=secret)] == [State.ENABLED, State.DISABLED]
    accessed = rest.access_secret_version(name=f"{secret}/versions/latest")
    assert (accessed.name, accessed.payload.data) == (f"{secret}/versions/2", b"newer")


# ---- the route table is the official client's ------------------------------------------------------------


def test_every_uri_the_official_client_calls_is_routed() -> None:
    expected = set()
    base = rest_base._BaseSecretManagerServiceRestTransport
    for name, member in inspect.getmembers(base, inspect.isclass):
        if name.startswith("_Base"):
            options: list[dict[str, str]] = member._get_http_options()  # type: ignore[attr-defined]
            for option in options:
                rpc = name.removeprefix("_Base")
                expected.add((option["method"].upper(), option["uri"], rpc, option.get("body", "")))

    routed = {(route.http_method, route.template, route.rpc, route.body) for route in ROUTES}

    assert len(expected) >= 30
    assert routed == expected
