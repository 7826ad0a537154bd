"""What agent/core/serving/connection.py (every listener's connection plumbing) relies on in aiohttp,
checked against the installed aiohttp.

Two kinds of reliance, both here so that an aiohttp upgrade that breaks one fails this file by name:

* the one internal: ``RequestHandler.handle_error()``, overridden so that a request aiohttp cannot parse
  gets our JSON body and a log line without the exception's text (which quotes the raw request, token
  included), and the handler's constructor, called directly because ``web.Server()`` builds the base class;
* the public hooks used for what they are documented to do: the handler's size limits and ``logger``
  option, and the access-log hook (``access_log_class``), which must run once a response is written, since
  that is when the connection cap may count a connection as idle again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from agent.core.serving.connection import MAX_FIELD_BYTES, MAX_HEADERS, MAX_LINE_BYTES
from agent.endpoint.protocol import aiohttp_log
from agent.endpoint.routes import ROUTE_UNMATCHED
from testing.logs import logged_text
from tests.endpoint.conftest import (
    CANARY,
    TOKEN,
    Endpoint,
    fetched,
    get,
    parse_response,
    raw_request,
    running_endpoint,
)

# -- the signatures protocol.py overrides or calls ----------------------------------------------------------


def test_handle_error_keeps_the_signature_we_override() -> None:
    parameters = inspect.signature(web.RequestHandler.handle_error).parameters
    assert list(parameters) == ["self", "request", "status", "exc", "message"]


def test_the_handler_constructor_takes_the_options_we_pass() -> None:
    parameters = inspect.signature(web.RequestHandler.__init__).parameters
    assert list(parameters)[:2] == ["self", "manager"]
    for name in (
        "loop",
        "keepalive_timeout",
        "max_line_size",
        "max_field_size",
        "max_headers",
        "lingering_time",
        "logger",
        "access_log",
        "access_log_class",
    ):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_the_access_log_hook_has_the_shape_we_implement() -> None:
    assert list(inspect.signature(AbstractAccessLogger.__init__).parameters) == [
        "self",
        "logger",
        "log_format",
    ]
    assert list(inspect.signature(AbstractAccessLogger.log).parameters) == [
        "self",
        "request",
        "response",
        "time",
    ]


# -- requests aiohttp cannot parse: our JSON body, our limits, no request text in any log ------------------

T = TOKEN
UNPARSEABLE = {
    # Each of these makes aiohttp raise an exception whose text quotes the token: logged by aiohttp's own
    # handle_error, the token would reach the log.
    "token in a malformed request line": f"GET /v1/secrets/db?t={T}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "token as the method": f"{T} /v1/secrets/db HTTP/1.1\r\n\r\n".encode(),
    "token in the HTTP version": f"GET /v1/secrets/db HTTP/9.{T}\r\n\r\n".encode(),
    "token in a bad header value": get("/v1/secrets/db", f"X-Echo: {T}\x7f"),
    # Longer than our limits, within aiohttp's defaults (8190 bytes, 128 headers): our options are applied.
    "request line over our limit": get(f"/v1/secrets/{T}" + "a" * MAX_LINE_BYTES),
    "header over our limit": get("/v1/secrets/db", f"X-Big: {T}" + "b" * MAX_FIELD_BYTES),
    "more headers than our limit": get("/v1/secrets/db", *[f"X-H{i}: 1" for i in range(MAX_HEADERS)]),
}


@pytest.mark.parametrize("data", UNPARSEABLE.values(), ids=UNPARSEABLE.keys())
async def test_an_unparseable_request_gets_our_json_body_and_no_log_quotes_it(
    endpoint: Endpoint, logs: pytest.LogCaptureFixture, data: bytes
) -> None:
    response = await raw_request(endpoint.port, data)  # reads until the server closes the connection
    assert response.status in (400, 431)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": "bad request" if response.status == 400 else "request failed"}
    assert endpoint.metrics.calls == [(ROUTE_UNMATCHED, response.status)]
    text = logged_text(logs)
    assert TOKEN not in text
    assert "malformed request from 127.0.0.1" in text  # our line, with the exception type only
    assert not [r for r in logs.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_aiohttp_own_exception_logs_keep_the_type_and_drop_the_text(
    logs: pytest.LogCaptureFixture,
) -> None:
    # An exception where only aiohttp catches it (while writing a response): it logs it through the
    # handler's ``logger`` option, whose filter must drop the text.
    async def failing_hook(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/openapi.json":
            raise RuntimeError(f"text quoting {TOKEN} and {CANARY.decode()}")

    async with running_endpoint(
        customize=lambda app: app.on_response_prepare.append(failing_hook)
    ) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # aiohttp drops the connection
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    records = [r for r in logs.records if r.name == aiohttp_log.name]
    assert records, "aiohttp no longer logs through the handler's logger option"
    assert any("RuntimeError" in r.getMessage() for r in records)
    assert all(r.exc_info is None and r.exc_text is None for r in records)
    text = logged_text(logs)
    assert TOKEN not in text
    assert CANARY.decode() not in text


# -- the connection cap: evicting idle connections, never busy ones ----------------------------------------


async def test_an_idle_connection_is_evicted_and_a_busy_one_is_not(http: aiohttp.ClientSession) -> None:
    async with running_endpoint(max_connections=2, idle_timeout=600) as endpoint:
        etag = f'"3-{endpoint.store.snapshot.items["db"].crc32c:08x}"'
        busy = asyncio.create_task(long_poll(endpoint, etag))
        await endpoint.store.waiters_reach(1)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            # A third connection: the idle one makes room; the long-poll keeps its connection.
            served = await raw_request(endpoint.port, get("/v1/secrets/db"))
            assert served.body == CANARY
            assert await asyncio.wait_for(idle_reader.read(), 10) == b""
            assert not busy.done()
            await endpoint.store.publish(endpoint.store.snapshot.with_updates([fetched("db", b"new", "4")]))
            assert await asyncio.wait_for(busy, 30) == (200, b"new")
        finally:
            idle_writer.close()


async def test_a_connection_counts_as_idle_again_once_its_response_is_written() -> None:
    # Only the access-log hook says a response is done; if aiohttp stopped calling it, the first
    # connection would stay busy forever and the newcomer would get the 503.
    async with running_endpoint(max_connections=1, idle_timeout=600) as endpoint:
        first_reader, first_writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            first_writer.write(get("/v1/secrets/db").replace(b"Connection: close", b"Connection: keep-alive"))
            head = await asyncio.wait_for(first_reader.readuntil(b"\r\n\r\n"), 10)
            body = await asyncio.wait_for(first_reader.readexactly(len(CANARY)), 10)
            assert parse_response(head + body).body == CANARY
            second = await raw_request(endpoint.port, get("/v1/secrets/db"))
            assert second.status == 200
            assert await asyncio.wait_for(first_reader.read(), 10) == b""  # evicted: it was idle
        finally:
            first_writer.close()


async def long_poll(endpoint: Endpoint, etag: str) -> tuple[int, bytes]:
    headers = endpoint.auth(**{"If-None-Match": etag})
    async with (
        aiohttp.ClientSession() as own,
        own.get(endpoint.url("/v1/secrets/db?wait=60s"), headers=headers) as response,
    ):
        return response.status, await response.read()
