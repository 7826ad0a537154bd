"""The endpoint's routes as an app sees them: values, headers, ETag/304, long-polls, events, refresh."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gc
import json
import weakref
from datetime import datetime
from importlib.resources import files
from typing import Any

import aiohttp
import pytest

from agent.core.model import Output, Snapshot, crc32c
from agent.core.store import SnapshotStore
from agent.endpoint.application import build_endpoint_app
from agent.endpoint.handlers import parse_wait
from agent.endpoint.serve import serve_endpoint
from agent.errors import AgentError
from tests.endpoint.conftest import (
    BINARY,
    CANARY,
    FETCHED_AT,
    INITIAL,
    Endpoint,
    fetched,
    running_endpoint,
    spec,
    stop,
)

NEW_VALUE = b"rotated-value-4"


def etag(data: bytes, version: str) -> str:
    return f'"{version}-{crc32c(data):08x}"'


async def test_raw_value_with_version_etag_and_no_caching(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response:
        body = await response.read()
        headers = response.headers
    assert response.status == 200
    assert body == CANARY
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Secret-Version"] == "3"
    assert headers["ETag"] == etag(CANARY, "3")
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    last_modified = email.utils.parsedate_to_datetime(headers["Last-Modified"])
    assert last_modified.timestamp() == int(FETCHED_AT)
    assert endpoint.metrics.calls == [("/v1/secrets/{name}", 200)]


async def test_binary_value_is_served_byte_for_byte(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    async with http.get(endpoint.url("/v1/secrets/tls"), headers=endpoint.auth()) as response:
        assert response.status == 200
        assert await response.read() == BINARY
        assert response.headers["ETag"] == etag(BINARY, "7")


async def test_json_format_text_value(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    async with http.get(endpoint.url("/v1/secrets/db?format=json"), headers=endpoint.auth()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["ETag"] == etag(CANARY, "3")
        body = await response.json()
    assert body == {
        "name": "db",
        "version": "3",
        "value": CANARY.decode(),
        "encoding": "utf-8",
        "updated": "2024-05-01T12:00:00.250Z",
    }


async def test_json_format_base64_for_bytes_that_are_not_utf8(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/tls?format=json"), headers=endpoint.auth()) as response:
        body = await response.json()
    assert body["encoding"] == "base64"
    assert base64.b64decode(body["value"]) == BINARY
    assert datetime.fromisoformat(body["updated"]).timestamp() == FETCHED_AT


@pytest.mark.parametrize(
    "if_none_match",
    [
        etag(CANARY, "3"),
        "W/" + etag(CANARY, "3"),  # weak comparison, as RFC 9110 says for If-None-Match
        '"other", ' + etag(CANARY, "3"),
        "*",
    ],
)
async def test_if_none_match_current_etag_gives_304_without_body(
    endpoint: Endpoint, http: aiohttp.ClientSession, if_none_match: str
) -> None:
    headers = endpoint.auth(**{"If-None-Match": if_none_match})
    async with http.get(endpoint.url("/v1/secrets/db"), headers=headers) as response:
        assert response.status == 304
        assert await response.read() == b""
        assert response.headers["ETag"] == etag(CANARY, "3")
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("if_none_match", ['"2-00000000"', etag(CANARY, "2"), "garbage, not an etag"])
async def test_if_none_match_other_etag_gives_the_value(
    endpoint: Endpoint, http: aiohttp.ClientSession, if_none_match: str
) -> None:
    headers = endpoint.auth(**{"If-None-Match": if_none_match})
    async with http.get(endpoint.url("/v1/secrets/db"), headers=headers) as response:
        assert response.status == 200
        assert await response.read() == CANARY


async def test_list_gives_names_and_versions_never_values(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets"), headers=endpoint.auth()) as response:
        assert response.status == 200
        text = await response.text()
    assert json.loads(text) == {
        "secrets": [
            {"name": "db", "version": "3", "updated": "2024-05-01T12:00:00.250Z"},
            {"name": "pending", "version": None, "updated": None},
            {"name": "tls", "version": "7", "updated": "2024-05-01T12:00:00.250Z"},
        ]
    }
    assert CANARY.decode() not in text
    assert endpoint.metrics.calls == [("/v1/secrets", 200)]


async def test_assigned_but_not_fetched_is_503_with_retry_after(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/pending"), headers=endpoint.auth()) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"].startswith("not fetched yet")


async def test_unknown_name_is_404(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    async with http.get(endpoint.url("/v1/secrets/other"), headers=endpoint.auth()) as response:
        assert response.status == 404
        assert await response.json() == {"error": "unknown secret"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("format=xml", "format must be raw or json"),
        ("wait=soon", "wait must be a duration"),
        ("wait=-5s", "wait must be a duration"),
        ("wait=nan", "wait must be a duration"),
    ],
)
async def test_bad_parameters_are_400_with_a_fixed_message(
    endpoint: Endpoint, http: aiohttp.ClientSession, query: str, message: str
) -> None:
    async with http.get(endpoint.url(f"/v1/secrets/db?{query}"), headers=endpoint.auth()) as response:
        assert response.status == 400
        body = await response.text()
    assert json.loads(body)["error"].startswith(message)
    assert query.split("=")[1] not in body  # the input is never echoed


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30.0), ("500ms", 0.5), ("2m", 60.0), ("1h30m", 60.0), ("12", 12.0), ("0", 0.0), ("0s", 0.0)],
)
def test_wait_durations_are_capped_at_max_wait(raw: str, seconds: float) -> None:
    assert parse_wait(raw, cap=60.0) == seconds


# -- long-polls ------------------------------------------------------------------------------------------


async def test_long_poll_returns_the_new_value_as_soon_as_it_is_published(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    headers = endpoint.auth(**{"If-None-Match": etag(CANARY, "3")})
    events: list[str] = []

    async def poll() -> tuple[int, bytes, str]:
        async with http.get(endpoint.url("/v1/secrets/db?wait=60s"), headers=headers) as response:
            body = await response.read()
            events.append("answered")
            return response.status, body, response.headers["X-Secret-Version"]

    waiting = asyncio.create_task(poll())
    await endpoint.store.waiters_reach(1)
    # Another secret rotating must not wake this poll: it goes back to waiting.
    await endpoint.store.publish(INITIAL.with_updates([fetched("tls", b"other", "8")]))
    await endpoint.store.waiters_reach(2)
    assert not waiting.done()
    events.append("published")
    await endpoint.store.publish(INITIAL.with_updates([fetched("db", NEW_VALUE, "4")]))
    status, body, version = await asyncio.wait_for(waiting, 30)
    assert events == ["published", "answered"]
    assert (status, body, version) == (200, NEW_VALUE, "4")


async def test_long_poll_answers_304_at_the_deadline(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    headers = endpoint.auth(**{"If-None-Match": etag(CANARY, "3")})
    async with http.get(endpoint.url("/v1/secrets/db?wait=200ms"), headers=headers) as response:
        assert response.status == 304
        assert response.headers["ETag"] == etag(CANARY, "3")
    assert endpoint.store.wait_calls >= 1  # it did wait


async def test_long_poll_is_capped_at_max_wait(http: aiohttp.ClientSession) -> None:
    async with running_endpoint(max_wait=0.2) as endpoint:
        headers = endpoint.auth(**{"If-None-Match": etag(CANARY, "3")})
        request = http.get(endpoint.url("/v1/secrets/db?wait=1h"), headers=headers)
        async with asyncio.timeout(30):
            async with request as response:
                assert response.status == 304


async def test_long_poll_for_a_secret_not_fetched_yet_returns_when_it_arrives(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async def poll() -> tuple[int, bytes]:
        url = endpoint.url("/v1/secrets/pending?wait=60s")
        async with http.get(url, headers=endpoint.auth()) as response:
            return response.status, await response.read()

    waiting = asyncio.create_task(poll())
    await endpoint.store.waiters_reach(1)
    await endpoint.store.publish(INITIAL.with_updates([fetched("pending", b"here now", "1")]))
    assert await asyncio.wait_for(waiting, 30) == (200, b"here now")


async def test_wait_without_if_none_match_answers_at_once(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/secrets/db?wait=60s"), headers=endpoint.auth()) as response:
        assert response.status == 200
        assert await response.read() == CANARY
    assert endpoint.store.wait_calls == 0


async def test_stopping_the_endpoint_ends_pending_long_polls(http: aiohttp.ClientSession) -> None:
    async with running_endpoint(max_wait=300) as endpoint:
        headers = endpoint.auth(**{"If-None-Match": etag(CANARY, "3")})

        async def poll() -> int:
            async with http.get(endpoint.url("/v1/secrets/db?wait=5m"), headers=headers) as response:
                return response.status

        waiting = asyncio.create_task(poll())
        await endpoint.store.waiters_reach(1)
        await stop(endpoint.task)
        # The poll answered (304: nothing changed) or lost its connection; either way well before 5 minutes.
        try:
            status = await asyncio.wait_for(waiting, 10)
        except aiohttp.ClientError:
            status = None
        assert status in (304, None)


# -- Server-Sent Events ------------------------------------------------------------------------------------


async def read_event(stream: aiohttp.StreamReader) -> list[str]:
    """The lines of the next SSE block (up to the blank line)."""
    lines: list[str] = []
    while True:
        line = (await stream.readline()).decode()
        if line == "":
            raise EOFError("stream ended")
        if line in ("\n", "\r\n"):
            if lines:
                return lines
            continue
        lines.append(line.rstrip("\r\n"))


async def test_events_stream_one_rotation_event_per_changed_secret(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/v1/events"), headers=endpoint.auth()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        assert await read_event(response.content) == [": connected"]
        rotated = fetched("db", NEW_VALUE, "4", at=FETCHED_AT + 60)
        # tls is republished unchanged: no event for it.
        await endpoint.store.publish(INITIAL.with_updates([rotated, fetched("tls", BINARY, "7")]))
        event = await asyncio.wait_for(read_event(response.content), 10)
        assert event[0] == "event: rotated"
        assert event[1].startswith("data: ")
        assert json.loads(event[1].removeprefix("data: ")) == {
            "name": "db",
            "version": "4",
            "time": "2024-05-01T12:01:00.250Z",
        }
        await endpoint.store.publish(INITIAL.with_updates([rotated, fetched("pending", b"x", "1")]))
        event = await asyncio.wait_for(read_event(response.content), 10)
        assert json.loads(event[1].removeprefix("data: "))["name"] == "pending"
        assert NEW_VALUE.decode() not in "\n".join(event)


async def test_events_stream_sends_keepalive_comments(http: aiohttp.ClientSession) -> None:
    async with (
        running_endpoint(ping_interval=0.05) as endpoint,
        http.get(endpoint.url("/v1/events"), headers=endpoint.auth()) as response,
    ):
        assert await read_event(response.content) == [": connected"]
        assert await asyncio.wait_for(read_event(response.content), 10) == [": ping"]


async def test_events_stream_ends_when_the_endpoint_stops(http: aiohttp.ClientSession) -> None:
    async with (
        running_endpoint() as endpoint,
        http.get(endpoint.url("/v1/events"), headers=endpoint.auth()) as response,
    ):
        assert await read_event(response.content) == [": connected"]
        await stop(endpoint.task)
        with pytest.raises((EOFError, aiohttp.ClientError)):
            await asyncio.wait_for(read_event(response.content), 10)
    assert ("/v1/events", 200) in endpoint.metrics.calls


# -- refresh, the OpenAPI document, methods ------------------------------------------------------------


async def test_refresh_calls_the_callback_and_answers_202(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.post(endpoint.url("/v1/refresh"), headers=endpoint.auth()) as response:
        assert response.status == 202
        assert await response.json() == {"status": "refresh requested"}
    assert endpoint.refreshes == [1]
    assert endpoint.metrics.calls == [("/v1/refresh", 202)]


async def test_refresh_with_a_large_body_is_413_and_does_not_refresh(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        endpoint.url("/v1/refresh"), headers=endpoint.auth(), data=b"x" * 100_000
    ) as response:
        assert response.status == 413
        assert await response.json() == {"error": "request body too large"}
    assert endpoint.refreshes == []


@pytest.mark.parametrize(("wait", "retry_after"), [(0.2, "1"), (1.0, "1"), (2.5, "3"), (3600.0, "3600")])
async def test_refresh_asked_too_soon_is_429_with_retry_after_in_whole_seconds(
    http: aiohttp.ClientSession, wait: float, retry_after: str
) -> None:
    """The sync loop refused it (a forced round started less than the minimum interval ago): the client is
    told when to come back, rounded up so that it is accepted then."""
    async with (
        running_endpoint(refresh=lambda: wait) as endpoint,
        http.post(endpoint.url("/v1/refresh"), headers=endpoint.auth()) as response,
    ):
        assert response.status == 429
        assert response.headers["Retry-After"] == retry_after
        assert response.headers["Cache-Control"] == "no-store"
        assert await response.json() == {
            "error": "refresh asked too soon after the last one: retry after Retry-After seconds"
        }
    assert endpoint.metrics.calls == [("/v1/refresh", 429)]


async def test_openapi_document_is_served_without_a_token(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    async with http.get(endpoint.url("/openapi.json")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        served = await response.read()
    assert served == files("agent.endpoint").joinpath("openapi.json").read_bytes()
    assert json.loads(served)["openapi"].startswith("3.")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("DELETE", "/v1/secrets/db", "GET"), ("PUT", "/v1/secrets", "GET"), ("GET", "/v1/refresh", "POST")],
)
async def test_wrong_method_is_405_json_with_allow(
    endpoint: Endpoint, http: aiohttp.ClientSession, method: str, path: str, allowed: str
) -> None:
    async with http.request(method, endpoint.url(path), headers=endpoint.auth()) as response:
        assert response.status == 405
        assert response.headers["Allow"] == allowed
        assert await response.json() == {"error": "method not allowed"}


async def test_unknown_route_is_404_json(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    async with http.get(endpoint.url("/v2/anything"), headers=endpoint.auth()) as response:
        assert response.status == 404
        assert await response.json() == {"error": "not found"}
    assert endpoint.metrics.calls == [("unmatched", 404)]


# -- listening ---------------------------------------------------------------------------------------------


async def test_a_port_in_use_is_a_clear_error(endpoint: Endpoint) -> None:
    app = build_endpoint_app(
        store=endpoint.store, token="x" * 16, refresh=lambda: None, audit=False, max_wait=1.0
    )
    with pytest.raises(
        AgentError, match=rf"cannot listen on 127\.0\.0\.1:{endpoint.port}: .*; set server\.listen"
    ):
        await serve_endpoint(app, "127.0.0.1", endpoint.port, max_connections=4)


async def test_listening_beyond_loopback_logs_a_warning(logs: pytest.LogCaptureFixture) -> None:
    app = build_endpoint_app(
        store=SnapshotStore([]), token="x" * 16, refresh=lambda: None, audit=False, max_wait=1.0
    )
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_endpoint(app, "0.0.0.0", 0, max_connections=4, started=bound.set_result))
    try:
        await asyncio.wait_for(asyncio.shield(bound), 10)
    finally:
        await stop(task)
    warnings = [r.getMessage() for r in logs.records if r.levelname == "WARNING"]
    assert any("0.0.0.0, which is not a loopback address" in message for message in warnings)


async def test_a_secret_no_longer_served_leaves_no_value_behind(http: aiohttp.ClientSession) -> None:
    # A selection lets a secret go: what the endpoint prepared for its reads held its value, and must go too.
    value = b"canary-removed-secret-7f1a"
    gone = fetched("gone", value, "1")
    output = Output("secret", "gone", value, "1", crc32c(value), file="gone", fetched_at=FETCHED_AT)
    watched: list[weakref.ref[Any]] = [weakref.ref(gone), weakref.ref(output)]
    db = fetched("db", CANARY, "3")
    db_output = Output("secret", "db", CANARY, "3", crc32c(CANARY), file="db", fetched_at=FETCHED_AT)
    async with running_endpoint(specs=[spec("db"), spec("gone")], initial=Snapshot()) as endpoint:
        await endpoint.store.publish(Snapshot({"db": db, "gone": gone}).with_outputs([db_output, output]))
        del gone, output, value
        for path in ("/v1/secrets/gone", "/v1/files/gone", "/v1/secrets/db", "/v1/files/db"):
            async with http.get(endpoint.url(path), headers=endpoint.auth()) as response:
                assert response.status == 200, path
        endpoint.store.remove_specs(["gone"])
        await endpoint.store.publish(Snapshot({"db": db}).with_outputs([db_output]))
        async with http.get(endpoint.url("/v1/secrets/gone"), headers=endpoint.auth()) as response:
            assert response.status == 404
        async with http.get(endpoint.url("/v1/files/db"), headers=endpoint.auth()) as response:
            assert await response.read() == CANARY
        gc.collect()
        assert [ref() for ref in watched] == [None, None], "the endpoint still holds the removed value"
