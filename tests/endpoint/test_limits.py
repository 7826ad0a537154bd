"""The connection cap (ConnectionLimiter) and the idle timeout: a flood of idle or half-sent connections must
not starve a real client, and a client whose request is being handled is never cut off."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import pytest

from agent.core.model import crc32c
from agent.endpoint.limits import BUSY_RESPONSE, ConnectionLimiter, refuse
from tests.endpoint.conftest import CANARY, fetched, get, parse_response, raw_request, running_endpoint

# -- ConnectionLimiter, by itself ---------------------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Only what the limiter uses of a transport: close()."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


def test_a_full_limiter_evicts_the_connection_idle_the_longest() -> None:
    limiter = ConnectionLimiter(3)
    a, b, c, d = (FakeTransport(n) for n in "abcd")
    assert all(limiter.admit(t) for t in (a, b, c))
    limiter.busy(a)
    limiter.busy(b)
    limiter.idle(a)  # a is idle again, more recently than c
    assert limiter.admit(d)
    assert [t.closed for t in (a, b, c)] == [False, False, True]
    assert limiter.open == 3


def test_a_full_limiter_of_busy_connections_refuses_and_says_so_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.endpoint.limits")
    limiter = ConnectionLimiter(2)
    busy = [FakeTransport("a"), FakeTransport("b")]
    for transport in busy:
        assert limiter.admit(transport)
        limiter.busy(transport)
    assert not limiter.admit(FakeTransport("c"))
    assert not limiter.admit(FakeTransport("d"))
    assert not any(t.closed for t in busy)
    assert [r.getMessage() for r in caplog.records] == [
        "local endpoint: all 2 connections are busy; refusing new ones with 503 (server.max_connections)"
    ]
    limiter.gone(busy[0])
    assert limiter.admit(FakeTransport("e"))


def test_reports_about_connections_already_gone_change_nothing() -> None:
    limiter = ConnectionLimiter(1)
    a = FakeTransport("a")
    assert limiter.admit(a)
    limiter.gone(a)
    limiter.busy(a)
    limiter.idle(a)
    limiter.busy(None)  # a request whose connection was lost has no transport any more
    limiter.idle(None)
    assert limiter.open == 0


def test_the_busy_response_is_a_complete_json_503() -> None:
    response = parse_response(BUSY_RESPONSE)
    assert response.status == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.json() == {"error": "too many connections: retry shortly"}


async def test_a_refused_connection_is_answered_half_closed_then_closed() -> None:
    written: list[bytes] = []

    class Recording(FakeTransport):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            written.append(bytes(data))

        def write_eof(self) -> None:
            written.append(b"<eof>")

    transport = Recording("refused")
    linger = refuse(transport)
    assert written == [BUSY_RESPONSE, b"<eof>"]
    assert not transport.closed  # not yet: the client must read the 503 first
    linger.cancel()


# -- the limits of a running endpoint ------------------------------------------------------------------------


async def open_idle(
    port: int, count: int, partial: bool
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    connections = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if partial and i % 2:
            # Half a request, never finished: a slowloris.
            writer.write(b"GET /v1/secrets/db HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        connections.append((reader, writer))
    return connections


async def closed_by_server(
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], want: int, within: float = 10.0
) -> int:
    """How many of ``connections`` the server closed (EOF or reset), waiting ``within`` s for ``want``."""

    async def sees_close(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()

    pending = {asyncio.create_task(sees_close(reader)) for reader, _ in connections}
    closed = 0
    deadline = asyncio.get_running_loop().time() + within
    while pending and closed < want:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        closed += len(done)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return closed


def close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


async def test_a_thousand_idle_connections_do_not_starve_a_real_client(http: aiohttp.ClientSession) -> None:
    limit = 50
    # An idle timeout far longer than the test: only the connection cap can close the flood's sockets.
    async with running_endpoint(max_connections=limit, idle_timeout=600) as endpoint:
        flood = await open_idle(endpoint.port, 1000, partial=True)
        try:
            async with asyncio.timeout(20):
                async with http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response:
                    assert response.status == 200
                    assert await response.read() == CANARY
            # The cap is real: the server let go of all but `limit` of the flood's sockets.
            assert await closed_by_server(flood, 1000 - limit) >= 1000 - limit
        finally:
            close_all(flood)


async def test_idle_and_half_sent_connections_are_closed_after_the_idle_timeout() -> None:
    async with running_endpoint(idle_timeout=0.3) as endpoint:
        idle = await open_idle(endpoint.port, 4, partial=True)
        try:
            assert await closed_by_server(idle, 4) == 4
        finally:
            close_all(idle)


async def test_when_every_connection_is_busy_a_newcomer_gets_503(http: aiohttp.ClientSession) -> None:
    async with running_endpoint(max_connections=2) as endpoint:
        etag = f'"3-{crc32c(CANARY):08x}"'
        headers = endpoint.auth(**{"If-None-Match": etag})

        async def long_poll() -> int:
            # A session each: two connections, as two apps would hold.
            async with (
                aiohttp.ClientSession() as own,
                own.get(endpoint.url("/v1/secrets/db?wait=60s"), headers=headers) as response,
            ):
                return response.status

        polls = [asyncio.create_task(long_poll()) for _ in range(2)]
        await endpoint.store.waiters_reach(2)
        refused = await raw_request(endpoint.port, get("/v1/secrets/db"))
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "too many connections: retry shortly"}
        for _ in range(5):  # an ordinary client, whose request is already sent when the answer comes
            async with (
                aiohttp.ClientSession() as other,
                other.get(endpoint.url("/v1/secrets/db")) as response,
            ):
                assert response.status == 503
                assert await response.json() == {"error": "too many connections: retry shortly"}
        await endpoint.store.publish(endpoint.store.snapshot.with_updates([fetched("db", b"new", "4")]))
        assert await asyncio.wait_for(asyncio.gather(*polls), 30) == [200, 200]
        # Slots free again: served.
        assert (await raw_request(endpoint.port, get("/v1/secrets/db"))).body == b"new"
