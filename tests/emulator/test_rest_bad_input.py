"""Raw HTTP against the emulator's REST API: the exact JSON Google sends, and bad input that must get a
Google-style 4xx (never a 500, never a crash, never the value echoed back)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import google_crc32c
import grpc
import pytest
import requests
from aiohttp import web
from google.api_core import exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_emulator.dispatch import Dispatcher
from agent_emulator.faults import CallCounters
from agent_emulator.methods import Method
from agent_emulator.rest import HTTP_STATUS, add_rest_routes
from agent_emulator.server import EmulatorEndpoints

CANARY = "CANARY-7c1f9e-do-not-echo"
"""Planted in bad values: it must show up in no response and no log line."""

SECRET = "projects/p/secrets/s"
VERSION = f"{SECRET}/versions/1"


@dataclass
class Api:
    """The emulator's REST base URL and a requests session bound to it."""

    base: str
    session: requests.Session

    def call(
        self, method: str, path: str, body: str | bytes | None = None, **kwargs: Any
    ) -> requests.Response:
        return self.session.request(method, self.base + path, data=body, timeout=10, **kwargs)


@pytest.fixture
def api(emulator: EmulatorEndpoints) -> Iterator[Api]:
    """A REST endpoint holding SECRET with one version (``VERSION``, data ``value``)."""
    with requests.Session() as session:
        # What the official clients send; without it a state-changing request is refused (guard.py).
        session.headers["Content-Type"] = "application/json"
        api = Api(emulator.rest_url.rstrip("/"), session)
        created = api.call("POST", "/v1/projects/p/secrets?secretId=s", '{"replication": {"automatic": {}}}')
        assert created.status_code == 200, created.text
        added = api.call(
            "POST", f"/v1/{SECRET}:addVersion", json.dumps({"payload": {"data": _b64(b"value")}})
        )
        assert added.status_code == 200, added.text
        yield api


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_google_error(response: requests.Response, http_status: int, status: str) -> dict[str, Any]:
    """The response is Google's error JSON with this HTTP status and google.rpc status; returns ``error``."""
    assert response.status_code == http_status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == http_status
    assert error["status"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


# ---- what a good response looks like on the wire --------------------------------------------------------


def test_access_response_json_is_googles_shape(api: Api) -> None:
    data = b"\x00binary\xffvalue"
    api.call("POST", f"/v1/{SECRET}:addVersion", json.dumps({"payload": {"data": _b64(data)}}))

    response = api.call("GET", f"/v1/{SECRET}/versions/latest:access")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {
        "name": f"{SECRET}/versions/2",
        "payload": {"data": _b64(data), "dataCrc32c": str(google_crc32c.value(data))},
    }


def test_enums_are_names_by_default_and_numbers_when_the_client_asks(api: Api) -> None:
    by_name = api.call("GET", f"/v1/{VERSION}?alt=json").json()
    by_number = api.call("GET", f"/v1/{VERSION}", params={"$alt": "json;enum-encoding=int"}).json()

    assert by_name["state"] == "ENABLED"
    assert by_number["state"] == 1
    assert by_name["createTime"].endswith("Z")


def test_delete_answers_an_empty_object(api: Api) -> None:
    response = api.call("DELETE", f"/v1/{SECRET}")

    assert response.status_code == 200
    assert response.json() == {}
    assert api.call("GET", f"/v1/{SECRET}").status_code == 404


@pytest.mark.parametrize(
    "mask", ["versionAliases,labels", "version_aliases,labels", "labels, versionAliases"]
)
def test_update_mask_takes_camel_and_snake_case(api: Api, mask: str) -> None:
    body = {"labels": {"team": "a"}, "versionAliases": {"stable": "1"}, "annotations": {"ignored": "x"}}

    response = api.call("PATCH", f"/v1/{SECRET}", json.dumps(body), params={"updateMask": mask})

    assert response.status_code == 200, response.text
    secret = response.json()
    assert secret["labels"] == {"team": "a"}
    assert secret["versionAliases"] == {"stable": "1"}  # int64 values are JSON strings
    assert "annotations" not in secret


def test_etag_sent_in_the_body_and_the_query(api: Api) -> None:
    secret = api.call("GET", f"/v1/{SECRET}").json()
    version = api.call("GET", f"/v1/{VERSION}").json()

    stale = api.call("POST", f"/v1/{VERSION}:disable", json.dumps({"etag": '"0"'}))
    disabled = api.call("POST", f"/v1/{VERSION}:disable", json.dumps({"etag": version["etag"]}))
    wrong_delete = api.call("DELETE", f"/v1/{SECRET}", params={"etag": '"0"'})
    deleted = api.call("DELETE", f"/v1/{SECRET}", params={"etag": secret["etag"]})

    assert_google_error(stale, 400, "FAILED_PRECONDITION")
    assert disabled.json()["state"] == "DISABLED"
    assert_google_error(wrong_delete, 400, "FAILED_PRECONDITION")
    assert deleted.status_code == 200


# ---- bad input: a table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    method: str
    path: str
    body: str | bytes | None
    http_status: int
    status: str
    message: str
    """A fragment the error message must contain."""


ADD = f"/v1/{SECRET}:addVersion"
CREATE = "/v1/projects/p/secrets?secretId=new"

BAD_REQUESTS: dict[str, Bad] = {
    # JSON of the wrong shape or type
    "invalid JSON": Bad(
        "POST", ADD, '{"payload": {"data": ', 400, "INVALID_ARGUMENT", "Invalid JSON payload"
    ),
    "JSON array body": Bad("POST", ADD, "[1, 2]", 400, "INVALID_ARGUMENT", "Root element must be a message"),
    "JSON string body": Bad("POST", ADD, f'"{CANARY}"', 400, "INVALID_ARGUMENT", "Root element"),
    "not UTF-8": Bad(
        "POST", ADD, b'{"payload": "\xff\xfe"}', 400, "INVALID_ARGUMENT", "Invalid JSON payload"
    ),
    "NaN": Bad("POST", ADD, '{"payload": {"dataCrc32c": NaN}}', 400, "INVALID_ARGUMENT", "Invalid JSON"),
    "deep nesting": Bad("POST", ADD, "[" * 100_000, 400, "INVALID_ARGUMENT", "Invalid JSON payload"),
    "payload is a number": Bad(
        "POST",
        ADD,
        '{"payload": 5}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'payload' (type.googleapis.com/google.cloud.secretmanager.v1.SecretPayload)",
    ),
    "payload is a string": Bad(
        "POST", ADD, f'{{"payload": "{CANARY}"}}', 400, "INVALID_ARGUMENT", "Invalid value at 'payload'"
    ),
    "data not base64": Bad(
        "POST",
        ADD,
        f'{{"payload": {{"data": "{CANARY} not base64!"}}}}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'payload.data' (TYPE_BYTES)",
    ),
    "data is a number": Bad(
        "POST", ADD, '{"payload": {"data": 12}}', 400, "INVALID_ARGUMENT", "Invalid value at 'payload.data'"
    ),
    "crc32c not a number": Bad(
        "POST",
        ADD,
        f'{{"payload": {{"data": "dmFsdWU=", "dataCrc32c": "{CANARY}"}}}}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'payload.data_crc32c' (TYPE_INT64)",
    ),
    "unknown field": Bad(
        "POST",
        ADD,
        '{"payload": {"data": "dmFsdWU="}, "secretValue": 1}',
        400,
        "INVALID_ARGUMENT",
        'Invalid JSON payload received. Unknown name "secretValue": Cannot find field.',
    ),
    "unknown nested field": Bad(
        "POST",
        CREATE,
        '{"replication": {"automatic": {}}, "rotation": {"every": "1h"}}',
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload received. Unknown name \"every\" at 'secret.rotation': Cannot find field.",
    ),
    "labels as a list": Bad(
        "POST",
        CREATE,
        f'{{"labels": ["{CANARY}"]}}',
        400,
        "INVALID_ARGUMENT",
        "Unknown name \"labels\" at 'secret': Proto field is not repeating, cannot start list.",
    ),
    "label value a number": Bad(
        "POST",
        CREATE,
        '{"labels": {"env": 5}}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'secret.labels[env]' (TYPE_STRING)",
    ),
    "alias not a number": Bad(
        "POST",
        CREATE,
        f'{{"versionAliases": {{"a": "{CANARY}"}}}}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'secret.version_aliases[a]' (TYPE_INT64)",
    ),
    "topics not a list": Bad(
        "POST",
        CREATE,
        '{"topics": {"name": "t"}}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'secret.topics'",
    ),
    "bad timestamp": Bad(
        "POST",
        CREATE,
        '{"expireTime": "tomorrow"}',
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'secret.expire_time'",
    ),
    "two members of a oneof": Bad(
        "POST",
        CREATE,
        '{"expireTime": "2999-01-01T00:00:00Z", "ttl": "3600s"}',
        400,
        "INVALID_ARGUMENT",
        "Oneof field 'secret.expiration' is already set",
    ),
    "etag a number": Bad(
        "POST", f"/v1/{VERSION}:disable", '{"etag": 5}', 400, "INVALID_ARGUMENT", "Invalid value at 'etag'"
    ),
    # query parameters
    "unknown query parameter": Bad(
        "GET",
        "/v1/projects/p/secrets?color=red",
        None,
        400,
        "INVALID_ARGUMENT",
        "Cannot bind query parameter",
    ),
    "page size not a number": Bad(
        "GET",
        "/v1/projects/p/secrets?pageSize=ten",
        None,
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'page_size' (TYPE_INT32)",
    ),
    "query parameter on a whole-body method": Bad(
        "POST", f"/v1/{VERSION}:disable?etag=x", "{}", 400, "INVALID_ARGUMENT", "Cannot bind query parameter"
    ),
    "path field in the query": Bad(
        "GET", f"/v1/{SECRET}?name=projects/q/secrets/t", None, 400, "INVALID_ARGUMENT", "Cannot bind"
    ),
    "alt=proto": Bad("GET", f"/v1/{SECRET}?alt=proto", None, 400, "INVALID_ARGUMENT", "'alt'"),
    "unknown enum encoding": Bad(
        "GET", f"/v1/{SECRET}?%24alt=json%3Benum-encoding%3Droman", None, 400, "INVALID_ARGUMENT", "'$alt'"
    ),
    # what the service itself refuses
    "no secret id": Bad(
        "POST", "/v1/projects/p/secrets", "{}", 400, "INVALID_ARGUMENT", "Secret ID must be provided."
    ),
    "malformed secret id": Bad(
        "GET", "/v1/projects/p/secrets/bad%20id", None, 400, "INVALID_ARGUMENT", "Secret ID"
    ),
    "malformed version id": Bad(
        "GET",
        f"/v1/{SECRET}/versions/-1:access",
        None,
        400,
        "INVALID_ARGUMENT",
        "does not match the expected format",
    ),
    "payload over 64 KiB": Bad(
        "POST",
        ADD,
        json.dumps({"payload": {"data": _b64(b"x" * (64 * 1024 + 1))}}),
        400,
        "INVALID_ARGUMENT",
        "must not be larger than 65536 bytes",
    ),
    "unknown update mask path": Bad(
        "PATCH", f"/v1/{SECRET}?updateMask=colour", "{}", 400, "INVALID_ARGUMENT", "invalid argument"
    ),
    "missing secret": Bad("GET", "/v1/projects/p/secrets/missing", None, 404, "NOT_FOUND", "not found"),
    # size
    "body over 1 MiB": Bad(
        "POST",
        ADD,
        "x" * (2 * 1024 * 1024),
        413,
        "INVALID_ARGUMENT",
        "Request payload size exceeds the limit",
    ),
    # URLs and methods
    "unknown collection": Bad("GET", "/v1/projects/p/keys", None, 404, "NOT_FOUND", "was not found"),
    "outside /v1": Bad("GET", "/v2/projects/p/secrets", None, 404, "NOT_FOUND", "was not found"),
    "root": Bad("GET", "/", None, 404, "NOT_FOUND", "was not found"),
    "trailing slash": Bad("GET", "/v1/projects/p/secrets/", None, 404, "NOT_FOUND", "was not found"),
    "empty segment": Bad("GET", "/v1/projects//secrets/s", None, 404, "NOT_FOUND", "was not found"),
    "too deep": Bad("GET", f"/v1/{VERSION}/more", None, 404, "NOT_FOUND", "was not found"),
    "PUT on a secret": Bad("PUT", f"/v1/{SECRET}", "{}", 405, "UNIMPLEMENTED", "allowed: DELETE, GET, PATCH"),
    "GET on addVersion": Bad("GET", ADD, None, 405, "UNIMPLEMENTED", "allowed: POST"),
    "POST on access": Bad("POST", f"/v1/{VERSION}:access", "{}", 405, "UNIMPLEMENTED", "allowed: GET"),
    "rotateSecret": Bad(
        "POST",
        f"/v1/{SECRET}:rotateSecret",
        "{}",
        501,
        "UNIMPLEMENTED",
        "Method RotateSecret is not implemented.",
    ),
    "getIamPolicy": Bad("GET", f"/v1/{SECRET}:getIamPolicy", None, 501, "UNIMPLEMENTED", "GetIamPolicy"),
    "locations": Bad("GET", "/v1/projects/p/locations", None, 501, "UNIMPLEMENTED", "ListLocations"),
    "unknown custom method": Bad(
        "POST", f"/v1/{SECRET}:frobnicate", "{}", 501, "UNIMPLEMENTED", ":frobnicate"
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_request_gets_googles_error(api: Api, case: Bad, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    response = api.call(case.method, case.path, case.body)

    error = assert_google_error(response, case.http_status, case.status)
    assert case.message in error["message"]
    assert CANARY not in response.text
    assert CANARY not in caplog.text
    assert "Traceback" not in caplog.text


def test_field_errors_name_the_field_like_google(api: Api) -> None:
    response = api.call("POST", ADD, '{"payload": {"data": "%%%"}}')

    error = assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert error["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {"field": "payload.data", "description": "Invalid value at 'payload.data' (TYPE_BYTES)"}
            ],
        }
    ]


def test_wrong_method_lists_the_allowed_ones(api: Api) -> None:
    response = api.call("PUT", f"/v1/{SECRET}", "{}")

    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET, PATCH"


def test_a_bad_request_changes_nothing(api: Api) -> None:
    before = api.call("GET", f"/v1/{SECRET}/versions").json()

    api.call("POST", ADD, '{"payload": {"data": "dmFsdWU="}, "unknown": true}')
    api.call("POST", ADD, '{"payload": {"data": "!!"}}')

    assert api.call("GET", f"/v1/{SECRET}/versions").json() == before


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
SECRET_KEYS = st.sampled_from(
    [
        "labels",
        "annotations",
        "versionAliases",
        "topics",
        "rotation",
        "ttl",
        "expireTime",
        "replication",
        "etag",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(SECRET_KEYS, JSON_VALUES, max_size=4), secret_id=st.text(max_size=12))
def test_any_json_to_create_secret_never_gets_a_500(api: Api, body: dict[str, Any], secret_id: str) -> None:
    response = api.call("POST", "/v1/projects/p/secrets", json.dumps(body), params={"secretId": secret_id})

    assert response.status_code in (200, 400, 409), response.text
    if response.status_code != 200:
        assert response.json()["error"]["status"] in (
            "INVALID_ARGUMENT",
            "FAILED_PRECONDITION",
            "ALREADY_EXISTS",
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_any_bytes_to_add_version_never_get_a_500(api: Api, body: bytes) -> None:
    response = api.call("POST", ADD, body)

    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


# ---- the last line of defence ---------------------------------------------------------------------------


class _FaultFree:
    async def before_call(self, method: Method, project: str) -> None:
        return None

    def corrupt_crc(self, method: Method) -> bool:
        return False


class _BrokenStore:
    """A store with a bug: every call raises an exception whose text quotes a secret."""

    def __getattr__(self, name: str) -> Any:
        def broken(request: Any) -> Any:
            raise RuntimeError(f"bug while handling {CANARY}")

        return broken


@pytest.fixture
async def broken_api() -> AsyncIterator[str]:
    app = web.Application()
    add_rest_routes(app, Dispatcher(_BrokenStore(), _FaultFree(), CallCounters()))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_an_internal_bug_is_a_generic_500_without_its_text(
    broken_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{broken_api}/v1/{SECRET}"
    response = await asyncio.to_thread(requests.get, url, timeout=10)

    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}
    }
    assert "RuntimeError" in caplog.text  # logged, for whoever runs the emulator...
    assert CANARY not in caplog.text  # ...without the exception's text


SERVICE_CODES = [
    "NOT_FOUND",
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "ABORTED",
    "CANCELLED",
    "OUT_OF_RANGE",
]


@pytest.mark.parametrize("name", SERVICE_CODES)
def test_rest_errors_are_caught_by_the_same_except_clause_as_grpc_errors(name: str) -> None:
    """``except NotFound`` (or FailedPrecondition's base BadRequest...) works whichever transport is used:
    the class the REST client picks from our HTTP status is the gRPC exception class or one of its bases."""
    code = grpc.StatusCode[name]
    grpc_class = exceptions.exception_class_for_grpc_status(code)
    rest_class = exceptions.exception_class_for_http_status(HTTP_STATUS[code])

    assert issubclass(grpc_class, rest_class)
    assert rest_class is not exceptions.GoogleAPICallError
