"""How many connections a listener holds open, what a connection gets when none is free, and log lines that
count a burst instead of repeating it.

Any process that can reach a listener can open sockets to it: a flood of idle ones must not starve a real
client (nor use up the process' file descriptors, which the snapshot writes need too), and a client whose
request is being handled must never be cut off. ConnectionLimiter decides; it knows connections by their
asyncio transport (what both the connection plumbing and a request can name, through public APIs) and
evicts one by closing that transport.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import resource
import time
from collections.abc import Callable

log = logging.getLogger("agent.core.serving")

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of the busy 503."""
REFUSED_LINGER = 1.0
"""Seconds a refused connection (all busy) is kept half-closed so that its client reads the 503."""
BURST_WINDOW = 10.0
"""Seconds over which repeats of one problem (refused connections, failed accepts) make one line."""
RESERVED_FDS = 64
"""File descriptors kept out of every listener's reach: snapshot and token writes, the gRPC channel, the
child processes of notifiers, the listening sockets themselves."""
LISTENERS_PER_PROCESS = 2
"""The listeners that share one process' file descriptors (the endpoint and the probes)."""

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


class BurstLog:
    """One problem that can repeat thousands of times a second, logged as one line when it starts, one line
    per ``window`` seconds with the count while it goes on, and one line with the count when it ends.

    ``started``, ``ongoing`` and ``ended`` are %-format strings; ``ongoing`` and ``ended`` get ``count``
    (repeats since the last line) and ``seconds`` (since the burst started) as named fields."""

    def __init__(
        self,
        logger: logging.Logger,
        started: str,
        ongoing: str,
        ended: str,
        *,
        window: float = BURST_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._started, self._ongoing, self._ended = started, ongoing, ended
        self._window = window
        self._clock = clock
        self._since: float | None = None
        self._last_line = 0.0
        self._count = 0

    @property
    def active(self) -> bool:
        """A burst is going on (``note`` was called since the last ``end``)."""
        return self._since is not None

    def note(self) -> None:
        """One more occurrence."""
        now = self._clock()
        if self._since is None:
            self._since = self._last_line = now
            self._count = 0
            self._log.warning(self._started)
            return
        self._count += 1
        if now - self._last_line >= self._window:
            self._log.warning(self._ongoing, {"count": self._count, "seconds": now - self._since})
            self._last_line = now
            self._count = 0

    def end(self) -> None:
        """The problem is over (if it had started): one last line with what was not told yet."""
        if self._since is None:
            return
        self._log.warning(self._ended, {"count": self._count, "seconds": self._clock() - self._since})
        self._since = None


class ConnectionLimiter:
    """At most ``limit`` open connections. When full, a newcomer closes the connection that has been idle
    (no request being handled) the longest; only when every connection is busy is the newcomer refused.

    Idle covers both a connection that never sent a byte and one stuck in the middle of its headers: the
    sockets a flood opens. A client whose request is being handled is never cut off. Closing a transport
    flushes what was already written to it, so an evicted connection still gets its last response.
    Refusals are logged as a burst (``name`` says which listener, ``setting`` which setting raises the cap).
    """

    def __init__(self, limit: int, *, name: str = "listener", setting: str = "max_connections") -> None:
        self.limit = limit
        self._idle: collections.OrderedDict[asyncio.BaseTransport, None] = collections.OrderedDict()
        self._busy: set[asyncio.BaseTransport] = set()
        self._refusals = BurstLog(
            log,
            f"{name}: all {limit} connections are busy; refusing new ones with 503 ({setting})",
            f"{name}: %(count)d more connections refused, all busy, %(seconds).0fs in ({setting})",
            f"{name}: accepting connections again; %(count)d more were refused, %(seconds).0fs in all",
        )

    @property
    def open(self) -> int:
        """Connections counted now (idle and busy)."""
        return len(self._idle) + len(self._busy)

    def admit(self, connection: asyncio.BaseTransport) -> bool:
        """Count a new connection (idle), evicting the longest idle one if full; False: refuse it."""
        if self.open >= self.limit:
            if not self._idle:
                self._refusals.note()
                return False
            oldest, _ = self._idle.popitem(last=False)
            oldest.close()
        elif self._refusals.active:
            self._refusals.end()
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


def refuse(transport: asyncio.Transport, response: bytes = BUSY_RESPONSE) -> asyncio.TimerHandle:
    """Answer ``response`` and close; returns the timer that closes it (cancel it if the client goes first).

    Half-close and drain instead of closing outright: closing a socket with the client's request still
    unread sends a reset, and the client would never see the 503. (A TLS transport cannot half-close: it
    is closed at once, which still flushes the answer.)"""
    transport.write(response)
    if transport.can_write_eof():
        transport.write_eof()
    else:
        transport.close()
    return asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)


def fit_to_fd_limit(max_connections: int, *, name: str, setting: str) -> int:
    """``max_connections``, lowered (with a warning) when the process' open-file limit cannot hold that many
    connections on each listener and still leave RESERVED_FDS for everything else: a flood must make the
    listener evict, not make the snapshot writes fail with EMFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    room = max(8, (soft - RESERVED_FDS) // LISTENERS_PER_PROCESS)
    if max_connections <= room:
        return max_connections
    log.warning(
        "%s: %s is %d, but the open-file limit (ulimit -n) is %d: holding at most %d connections",
        name,
        setting,
        max_connections,
        soft,
        room,
    )
    return room
