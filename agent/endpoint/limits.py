"""How many connections the endpoint holds open, and what a connection gets when none is free.

Any local process can open sockets to the endpoint: a flood of idle ones must not starve a real client, and
a client whose request is being handled must never be cut off. ConnectionLimiter decides; it knows
connections by their asyncio transport (what both the connection plumbing and a request can name, through
public APIs) and evicts one by closing that transport.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from agent.endpoint.responses import RETRY_AFTER_SECONDS

log = logging.getLogger("agent.endpoint.limits")

REFUSED_LINGER = 1.0
"""Seconds a refused connection (all busy) is kept half-closed so that its client reads the 503."""

_BUSY_BODY = b'{"error": "too many connections: retry shortly"}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Retry-After: " + str(RETRY_AFTER_SECONDS).encode() + b"\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n" + _BUSY_BODY
)
"""The whole answer to a refused connection, written before aiohttp ever sees it (so fixed bytes)."""


class ConnectionLimiter:
    """At most ``limit`` open connections. When full, a newcomer closes the connection that has been idle
    (no request being handled) the longest; only when every connection is busy is the newcomer refused.

    Idle covers both a connection that never sent a byte and one stuck in the middle of its headers: the
    sockets a flood opens. A client whose request is being handled is never cut off. Closing a transport
    flushes what was already written to it, so an evicted connection still gets its last response.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: collections.OrderedDict[asyncio.BaseTransport, None] = collections.OrderedDict()
        self._busy: set[asyncio.BaseTransport] = set()
        self._last_refusal_log = float("-inf")

    @property
    def open(self) -> int:
        """Connections counted now (idle and busy)."""
        return len(self._idle) + len(self._busy)

    def admit(self, connection: asyncio.BaseTransport) -> bool:
        """Count a new connection (idle), evicting the longest idle one if full; False: refuse it."""
        if self.open >= self.limit:
            if not self._idle:
                self._log_refusal()
                return False
            oldest, _ = self._idle.popitem(last=False)
            oldest.close()
        self._idle[connection] = None
        return True

    def busy(self, connection: asyncio.BaseTransport | None) -> None:
        """A request on ``connection`` is being handled (None: its connection is already gone)."""
        if connection is not None and connection in self._idle:  # not when already evicted or gone
            del self._idle[connection]
            self._busy.add(connection)

    def idle(self, connection: asyncio.BaseTransport | None) -> None:
        """The response on ``connection`` is completely written (None: its connection is already gone)."""
        if connection is not None and connection in self._busy:
            self._busy.discard(connection)
            self._idle[connection] = None  # the most recently active go last: evicted last

    def gone(self, connection: asyncio.BaseTransport) -> None:
        """``connection`` is closed, by either side."""
        self._idle.pop(connection, None)
        self._busy.discard(connection)

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:  # at most one line a minute under a flood
            self._last_refusal_log = now
            log.warning(
                "local endpoint: all %d connections are busy; refusing new ones with 503 "
                "(server.max_connections)",
                self.limit,
            )


def refuse(transport: asyncio.Transport) -> asyncio.TimerHandle:
    """Answer BUSY_RESPONSE and close; returns the timer that closes it (cancel it if the client goes first).

    Half-close and drain instead of closing outright: closing a socket with the client's request still
    unread sends a reset, and the client would never see the 503."""
    transport.write(BUSY_RESPONSE)
    transport.write_eof()
    return asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)
