"""Reads of what the renderer made: ``/v1/secrets/{name}`` answers what the secret's own file holds (a
``key:`` field, a decoded payload; 404 for ``deliver: false``), ``/v1/files/{path}`` any rendered file by its
path inside output_dir, with the same token, 304, long-poll, audit and metrics as a secret, and a path is
only ever a key into the configured outputs, never a file to open."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.config import written_files
from agent.core.model import Snapshot, crc32c
from agent.endpoint.handlers import NO_SUCH_FILE, NOT_FETCHED, NOT_RENDERED, not_delivered
from agent.endpoint.routes import ROUTE_FILE, ROUTE_UNMATCHED
from agent.endpoint.token import TOKEN_HEADER
from testing.logs import logged_text
from tests.endpoint.conftest import (
    API_OTHER,
    API_TOKEN,
    CANARY,
    CERT,
    FETCHED_AT,
    KEY_CANARY,
    RENDERED,
    RENDERED_FILES,
    RENDERED_ITEMS,
    RENDERED_SPECS,
    RENDERED_TEMPLATES,
    TOKEN,
    UNRENDERED_FILES,
    WRONG_TOKEN,
    Endpoint,
    creds_payload,
    fetched,
    get,
    raw_request,
    render_by_hand,
    running_endpoint,
)
from tests.endpoint.test_audit import audit_records

ROTATED_PASSWORD = b"canary-key-rotated-5c07"
SERVED_VALUES = (CANARY, KEY_CANARY, API_TOKEN, API_OTHER, ROTATED_PASSWORD)
"""Values that must appear in no log line, error body or metric."""


def etag(data: bytes, version: str) -> str:
    return f'"{version}-{crc32c(data):08x}"'


def template_output() -> tuple[bytes, str]:
    """The rendered ``config/app.yaml``: its bytes and its content-tag version."""
    output = RENDERED.file_outputs()["config/app.yaml"]
    return output.data, output.version


@contextlib.asynccontextmanager
async def rendered_endpoint(initial: Snapshot = RENDERED, **options: Any) -> AsyncIterator[Endpoint]:
    async with running_endpoint(specs=RENDERED_SPECS, initial=initial, files=RENDERED_FILES, **options) as e:
        yield e


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with rendered_endpoint() as running:
        yield running


def rotated(**updates: bytes) -> Snapshot:
    """RENDERED after a rotation (``name=payload``, each at version 6), rendered again."""
    return render_by_hand(
        RENDERED.with_updates(
            fetched(name, payload, "6", FETCHED_AT + 60) for name, payload in updates.items()
        )
    )


# -- what the fixtures stand for ----------------------------------------------------------------------------


def test_the_configured_files_are_every_file_the_configuration_writes() -> None:
    assert set(written_files(tuple(RENDERED_SPECS), tuple(RENDERED_TEMPLATES))) == RENDERED_FILES
    assert set(RENDERED.file_outputs()) == RENDERED_FILES - UNRENDERED_FILES


# -- /v1/files/{path} ----------------------------------------------------------------------------------------


async def test_a_key_file_is_served_with_its_secret_version_etag_and_date(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/files/creds/password"), headers=endpoint.auth()) as response:
        body = await response.read()
        headers = response.headers
    assert response.status == 200
    assert body == KEY_CANARY
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Secret-Version"] == "5"
    assert headers["ETag"] == etag(KEY_CANARY, "5")
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]).timestamp() == int(FETCHED_AT)
    assert endpoint.metrics.calls == [(ROUTE_FILE, 200)]


async def test_a_template_file_is_served_with_its_version(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    data, version = template_output()
    async with http.get(endpoint.url("/v1/files/config/app.yaml"), headers=endpoint.auth()) as response:
        assert response.status == 200
        assert await response.read() == data
        assert response.headers["X-Secret-Version"] == version
        assert response.headers["ETag"] == etag(data, version)


async def test_every_rendered_file_is_served_as_the_snapshot_holds_it(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    for path, output in RENDERED.file_outputs().items():
        async with http.get(endpoint.url(f"/v1/files/{path}"), headers=endpoint.auth()) as response:
            assert response.status == 200, path
            assert await response.read() == output.data, path
            assert response.headers["ETag"] == etag(output.data, output.version), path


async def test_json_format_names_the_path(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    url = endpoint.url("/v1/files/creds/password?format=json")
    async with http.get(url, headers=endpoint.auth()) as response:
        assert response.status == 200
        assert await response.json() == {
            "path": "creds/password",
            "version": "5",
            "value": KEY_CANARY.decode(),
            "encoding": "utf-8",
            "updated": "2024-05-01T12:00:00.250Z",
        }
    async with http.get(endpoint.url("/v1/files/cert?format=json"), headers=endpoint.auth()) as response:
        body = await response.json()
    assert (body["path"], body["encoding"], base64.b64decode(body["value"])) == ("cert", "base64", CERT)


async def test_if_none_match_the_current_etag_of_a_file_is_304(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    headers = endpoint.auth(**{"If-None-Match": etag(KEY_CANARY, "5")})
    async with http.get(endpoint.url("/v1/files/creds/password"), headers=headers) as response:
        assert response.status == 304
        assert await response.read() == b""
        assert response.headers["ETag"] == etag(KEY_CANARY, "5")
        assert response.headers["X-Secret-Version"] == "5"
    headers = endpoint.auth(**{"If-None-Match": '"4-00000000"'})
    async with http.get(endpoint.url("/v1/files/creds/password"), headers=headers) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("creds/password", ROTATED_PASSWORD),
        ("config/app.yaml", None),  # the template made from creds changes too
    ],
)
async def test_a_long_poll_on_a_file_is_answered_by_the_publish_that_changes_it(
    endpoint: Endpoint, http: aiohttp.ClientSession, path: str, expected: bytes | None
) -> None:
    current = RENDERED.file_outputs()[path]
    headers = endpoint.auth(**{"If-None-Match": etag(current.data, current.version)})

    async def poll() -> tuple[int, bytes]:
        async with http.get(endpoint.url(f"/v1/files/{path}?wait=60s"), headers=headers) as response:
            return response.status, await response.read()

    waiting = asyncio.create_task(poll())
    await endpoint.store.waiters_reach(1)
    # A rotation of a secret this file is not made from does not answer it: it waits again.
    await endpoint.store.publish(rotated(cert=base64.b64encode(b"other cert")))
    await endpoint.store.waiters_reach(2)
    assert not waiting.done()
    after = rotated(creds=creds_payload(ROTATED_PASSWORD))
    await endpoint.store.publish(after)
    status, body = await asyncio.wait_for(waiting, 30)
    assert status == 200
    assert body == (after.file_outputs()[path].data if expected is None else expected)
    assert body != current.data


async def test_a_long_poll_on_a_file_not_rendered_yet_is_answered_once_it_is(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async def poll() -> tuple[int, bytes]:
        url = endpoint.url("/v1/files/config/later.env?wait=60s")
        async with http.get(url, headers=endpoint.auth()) as response:
            return response.status, await response.read()

    waiting = asyncio.create_task(poll())
    await endpoint.store.waiters_reach(1)
    await endpoint.store.publish(rotated(pending=b"here now"))
    assert await asyncio.wait_for(waiting, 30) == (200, b"PENDING=here now\n")


async def test_a_configured_file_not_rendered_yet_is_503_with_retry_after(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    for path in sorted(UNRENDERED_FILES):
        async with http.get(endpoint.url(f"/v1/files/{path}"), headers=endpoint.auth()) as response:
            assert response.status == 503, path
            assert response.headers["Retry-After"] == "1"
            assert await response.json() == {"error": NOT_RENDERED}


async def test_a_path_that_is_not_an_output_is_404_and_never_echoed(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    for path in ("nope", "creds", "config", "config/", "creds/password/", "CREDS/PASSWORD", "db.bak"):
        async with http.get(endpoint.url(f"/v1/files/{path}"), headers=endpoint.auth()) as response:
            assert response.status == 404, path
            assert await response.json() == {"error": NO_SUCH_FILE}
    # A path pasted with a value in it: not in the answer, nor in any metric label.
    hostile = "x/" + CANARY.decode() + "/" + "y" * 2000
    async with http.get(endpoint.url(f"/v1/files/{hostile}"), headers=endpoint.auth()) as response:
        assert response.status == 404
        body = await response.read()
    assert CANARY not in body
    assert len(body) < 200
    assert {route for route, _ in endpoint.metrics.calls} == {ROUTE_FILE}
    assert CANARY.decode() not in endpoint.metrics.exposed_text()
    assert "creds/password" not in endpoint.metrics.exposed_text()


async def test_bad_parameters_on_a_file_are_400(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    for query, message in [("format=xml", "format must be raw or json"), ("wait=forever", "wait must be")]:
        url = endpoint.url(f"/v1/files/creds/password?{query}")
        async with http.get(url, headers=endpoint.auth()) as response:
            assert response.status == 400
            assert (await response.json())["error"].startswith(message)


@pytest.mark.parametrize("path", ["/v1/files/creds/password", "/v1/files/config/later.env", "/v1/files/nope"])
async def test_the_file_route_requires_the_token(
    endpoint: Endpoint, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(endpoint.url(path)) as response:
        assert response.status == 401
        assert await response.json() == {"error": f"missing token: send it in the {TOKEN_HEADER} header"}
    async with http.get(endpoint.url(path), headers={TOKEN_HEADER: WRONG_TOKEN}) as response:
        assert response.status == 403
        body = await response.read()
    assert KEY_CANARY not in body
    assert TOKEN.encode() not in body


# -- a path is a key, never a file ------------------------------------------------------------------------


@contextlib.contextmanager
def file_system_access() -> Iterator[list[str]]:
    """Every file this process opens or directory it lists while inside (a Python audit hook, installed
    at first use; hooks cannot be removed, so the one hook records only while a test is inside)."""
    if not _recording:
        sys.addaudithook(_hook)
        _recording.append([])  # the hook is installed: never again
    seen: list[str] = []
    _recording.append(seen)
    try:
        yield seen
    finally:
        _recording.remove(seen)


_recording: list[list[str]] = []
"""The lists the hook appends to; the first is a marker that it is installed, never read."""


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if len(_recording) > 1 and event in ("open", "os.listdir", "os.scandir"):
        for seen in _recording[1:]:
            seen.append(f"{event} {args[0]!r}")


def test_the_file_system_probe_sees_what_opens_a_file(tmp_path: Path) -> None:
    (tmp_path / "probe").write_bytes(b"x")
    with file_system_access() as opened:
        assert (tmp_path / "probe").read_bytes() == b"x"
    assert opened == [f"open {str(tmp_path / 'probe')!r}"]


TRAVERSALS = [
    "/v1/files/../..token",
    "/v1/files/../../.token",
    "/v1/files/%2e%2e/%2e%2e/.token",
    "/v1/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/v1/files/creds/../../../etc/passwd",
    "/v1/files/creds%2f..%2f..%2f.token",
    "/v1/files//etc/passwd",
    "/v1/files/%2Fetc%2Fpasswd",
    "/v1/files/./creds/password",
    "/v1/files/creds//password",
    "/v1/files/creds%5cpassword",
    "/v1/files/.token",
    "/v1/files/.secrets-agent.json",
    "/v1/files/db%00",
    "/v1/files/%252e%252e/.token",
    "/v1/files/~root/.ssh/id_rsa",
    "/v1/files/" + "a/" * 2000,  # within the request line limit
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda target: target[:50])
async def test_path_tricks_are_404_and_open_no_file(endpoint: Endpoint, target: str) -> None:
    with file_system_access() as opened:
        response = await raw_request(endpoint.port, get(target))
    assert response.status == 404
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"error"}
    assert b"root:" not in response.body
    assert KEY_CANARY not in response.body
    assert TOKEN.encode() not in response.body
    assert opened == []


async def test_a_10_kb_path_is_refused_before_any_route(endpoint: Endpoint) -> None:
    # Longer than the request line limit (agent.core.serving): aiohttp refuses it while parsing (400), so
    # it is counted under "unmatched" and never reaches a handler.
    with file_system_access() as opened:
        response = await raw_request(endpoint.port, get("/v1/files/" + "a" * 10_240))
    assert response.status == 400
    assert response.json() == {"error": "bad request"}
    assert endpoint.metrics.calls == [(ROUTE_UNMATCHED, 400)]
    assert opened == []


# -- /v1/secrets/{name} serves what the secret's file holds --------------------------------------------------


async def test_a_secret_with_key_serves_that_field_as_its_file_does(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/api"), headers=endpoint.auth()) as response:
        assert response.status == 200
        body = await response.read()
        headers = response.headers
    assert body == API_TOKEN
    assert API_OTHER not in body
    assert (headers["X-Secret-Version"], headers["ETag"]) == ("2", etag(API_TOKEN, "2"))
    async with http.get(endpoint.url("/v1/files/api"), headers=endpoint.auth()) as response:
        assert (await response.read(), response.headers["ETag"]) == (body, headers["ETag"])
    url = endpoint.url("/v1/secrets/api?format=json")
    async with http.get(url, headers=endpoint.auth()) as response:
        assert (await response.json())["value"] == API_TOKEN.decode()


async def test_a_base64_secret_serves_the_decoded_bytes(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/cert"), headers=endpoint.auth()) as response:
        assert response.status == 200
        assert await response.read() == CERT
        assert response.headers["ETag"] == etag(CERT, "9")


async def test_a_plain_secret_keeps_its_etag_when_rendered(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response:
        assert await response.read() == CANARY
        assert response.headers["ETag"] == etag(CANARY, "3")  # as before rendering: clients keep their tags


@pytest.mark.parametrize("initial", [RENDERED, Snapshot(RENDERED_ITEMS)], ids=["rendered", "not rendered"])
async def test_a_secret_with_deliver_false_is_404_pointing_to_its_files(
    http: aiohttp.ClientSession, initial: Snapshot
) -> None:
    async with rendered_endpoint(initial) as endpoint:
        for query in ("", "?format=json", "?wait=1s"):
            url = endpoint.url(f"/v1/secrets/creds{query}")
            async with http.get(url, headers=endpoint.auth()) as response:
                assert response.status == 404
                body = await response.read()
            assert KEY_CANARY not in body
            assert json.loads(body) == {"error": not_delivered("creds")}
    assert not_delivered("creds") == (
        "secret 'creds' is not delivered on its own (deliver: false): read its keys or templates under "
        "/v1/files/"
    )


async def test_a_snapshot_not_rendered_serves_plain_secrets_and_holds_back_the_rest(
    http: aiohttp.ClientSession,
) -> None:
    async with rendered_endpoint(Snapshot(RENDERED_ITEMS)) as endpoint:
        async with http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response:
            assert (response.status, await response.read()) == (200, CANARY)
        # Its file is one field (key) or the decoded payload: never the payload as fetched instead.
        for name in ("api", "cert"):
            async with http.get(endpoint.url(f"/v1/secrets/{name}"), headers=endpoint.auth()) as response:
                assert response.status == 503
                assert await response.json() == {"error": NOT_RENDERED}
        async with http.get(endpoint.url("/v1/secrets/pending"), headers=endpoint.auth()) as response:
            assert await response.json() == {"error": NOT_FETCHED}
        async with http.get(endpoint.url("/v1/files/creds/password"), headers=endpoint.auth()) as response:
            assert response.status == 503
        # Rendered later: served at once.
        await endpoint.store.publish(RENDERED)
        async with http.get(endpoint.url("/v1/secrets/api"), headers=endpoint.auth()) as response:
            assert (response.status, await response.read()) == (200, API_TOKEN)


async def test_a_new_snapshot_is_served_with_its_own_headers(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    for path in ("/v1/secrets/api", "/v1/files/creds/password"):
        async with http.get(endpoint.url(path), headers=endpoint.auth()) as response:
            assert response.headers["X-Secret-Version"] in ("2", "5")
    new_token = b'{"token": "canary-api-token-rotated"}'
    await endpoint.store.publish(rotated(api=new_token, creds=creds_payload(ROTATED_PASSWORD)))
    async with http.get(endpoint.url("/v1/secrets/api"), headers=endpoint.auth()) as response:
        assert await response.read() == b"canary-api-token-rotated"
        assert response.headers["ETag"] == etag(b"canary-api-token-rotated", "6")
    async with http.get(endpoint.url("/v1/files/creds/password"), headers=endpoint.auth()) as response:
        assert await response.read() == ROTATED_PASSWORD
        assert response.headers["ETag"] == etag(ROTATED_PASSWORD, "6")
        assert email.utils.parsedate_to_datetime(response.headers["Last-Modified"]).timestamp() == int(
            FETCHED_AT + 60
        )


async def test_the_listing_is_unchanged_by_rendering(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    async with http.get(endpoint.url("/v1/secrets"), headers=endpoint.auth()) as response:
        listed = (await response.json())["secrets"]
    assert [(entry["name"], entry["version"]) for entry in listed] == [
        ("api", "2"),
        ("cert", "9"),
        ("creds", "5"),
        ("db", "3"),
        ("pending", None),
        ("tls", "7"),
    ]


# -- audit ---------------------------------------------------------------------------------------------------


async def test_file_reads_are_audited_by_configured_path_and_never_with_a_value(
    endpoint: Endpoint, http: aiohttp.ClientSession, logs: pytest.LogCaptureFixture
) -> None:
    hostile = "pasted-" + KEY_CANARY.decode()
    reads = [
        ("/v1/files/creds/password", endpoint.auth()),
        ("/v1/files/creds/password", endpoint.auth(**{"If-None-Match": etag(KEY_CANARY, "5")})),
        ("/v1/files/config/app.yaml", endpoint.auth()),
        (f"/v1/files/{hostile}", endpoint.auth()),
        ("/v1/files/creds/password", {}),
        ("/v1/files/config/later.env", endpoint.auth()),
        ("/v1/secrets/creds", endpoint.auth()),
        ("/v1/secrets/api", endpoint.auth()),
    ]
    for path, headers in reads:
        async with http.get(endpoint.url(path), headers=headers) as response:
            await response.read()
    _, template_version = template_output()
    assert [(r["secret"], r["result"], r["version"], r["status"]) for r in audit_records(logs)] == [
        ("creds/password", "ok", "5", 200),
        ("creds/password", "not_modified", "5", 304),
        ("config/app.yaml", "ok", template_version, 200),
        (None, "unknown", None, 404),  # the client's text, never logged
        ("creds/password", "unauthorized", None, 401),
        ("config/later.env", "not_fetched", None, 503),
        ("creds", "not_delivered", None, 404),
        ("api", "ok", "2", 200),
    ]
    text = logged_text(logs)
    for value in SERVED_VALUES:
        assert value.decode() not in text
    assert hostile not in text


# -- with the real renderer ----------------------------------------------------------------------------------


async def test_what_the_real_renderer_makes_is_what_is_served(http: aiohttp.ClientSession) -> None:
    outputs = pytest.importorskip("agent.render.outputs", reason="agent.render.templates not written yet")
    renderer = outputs.Renderer(RENDERED_SPECS, RENDERED_TEMPLATES)
    snapshot = renderer.render(Snapshot(RENDERED_ITEMS))
    files = [plan.file for plan in renderer.plans if plan.file]
    assert set(files) == RENDERED_FILES
    async with running_endpoint(specs=RENDERED_SPECS, initial=snapshot, files=files) as endpoint:
        for path, output in snapshot.file_outputs().items():
            async with http.get(endpoint.url(f"/v1/files/{path}"), headers=endpoint.auth()) as response:
                assert (response.status, await response.read()) == (200, output.data), path
                assert response.headers["X-Secret-Version"] == output.version
        for name, value in [("api", API_TOKEN), ("cert", CERT), ("db", CANARY)]:
            async with http.get(endpoint.url(f"/v1/secrets/{name}"), headers=endpoint.auth()) as response:
                assert await response.read() == value
        async with http.get(endpoint.url("/v1/secrets/creds"), headers=endpoint.auth()) as response:
            assert response.status == 404
        async with http.get(endpoint.url("/v1/files/config/later.env"), headers=endpoint.auth()) as response:
            assert response.status == 503


async def test_an_encoded_slash_names_the_same_configured_path(endpoint: Endpoint) -> None:
    # aiohttp decodes the match (%2F -> /) and never removes dot segments: the lookup sees the decoded text,
    # so an encoded slash reaches the same configured output and nothing else.
    response = await raw_request(endpoint.port, get("/v1/files/creds%2Fpassword"))
    assert (response.status, response.body) == (200, KEY_CANARY)
