"""The connection cap (ConnectionLimiter) and the idle timeout: a flood of idle or half-sent connections must
not starve a real client, and a client whose request is being handled is never cut off."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from agent.core.model import crc32c
from agent.core.serving.limits import BUSY_RESPONSE, BurstLog, ConnectionLimiter, refuse
from tests.endpoint.conftest import (
    CANARY,
    close_all,
    closed_by_server,
    fetched,
    get,
    open_idle,
    parse_response,
    raw_request,
    running_endpoint,
)

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


def test_a_full_limiter_of_busy_connections_refuses_and_says_so_once_per_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.core.serving")
    limiter = ConnectionLimiter(2, name="local endpoint", setting="server.max_connections")
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
    assert caplog.records[-1].getMessage() == (
        "local endpoint: accepting connections again; 1 more were refused, 0s in all"
    )
    assert len(caplog.records) == 2


def test_a_burst_is_one_line_when_it_starts_one_per_window_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.burst")
    now = [0.0]
    burst = BurstLog(
        logging.getLogger("tests.burst"),
        "started",
        "%(count)d more, %(seconds).0fs in",
        "ended after %(count)d more, %(seconds).0fs in all",
        window=10,
        clock=lambda: now[0],
    )
    for _ in range(66_000):  # the accept failures of 20 s seen in the issue
        burst.note()
        now[0] += 20 / 66_000
    burst.end()
    burst.end()  # nothing more to say
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "started"
    assert messages[-1].startswith("ended after ")
    assert len(messages) <= 4
    told = sum(int(m.split()[0]) for m in messages[1:-1]) + int(messages[-1].split()[2])
    assert told == 66_000 - 1  # every repeat counted once, the first one being the "started" line


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

        def can_write_eof(self) -> bool:
            return True

    transport = Recording("refused")
    linger = refuse(transport)
    assert written == [BUSY_RESPONSE, b"<eof>"]
    assert not transport.closed  # not yet: the client must read the 503 first
    linger.cancel()


# -- the limits of a running endpoint ------------------------------------------------------------------------


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
