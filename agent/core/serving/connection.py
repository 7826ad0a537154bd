"""The per-connection plumbing between asyncio and aiohttp, for every listener: the connection cap, the
request size limits and the idle timeout, and JSON bodies (with quiet logs) for requests aiohttp cannot
parse.

What uses aiohttp's public API, and what cannot:

* ``LimitedConnection`` is a plain ``asyncio.Protocol`` that asks the ConnectionLimiter first and answers a
  refused connection itself with the fixed busy 503 (no aiohttp handler is ever built for it). An admitted
  connection it hands over to aiohttp's handler with ``transport.set_protocol()`` (composition, not a
  subclass of anything of aiohttp's: from then on the transport calls the handler directly, nothing in
  between on every read); the handler tells the limiter when its connection is gone. Evicting an idle
  connection closes its transport (``asyncio.Transport.close()``: what was already written is flushed,
  then the handler sees an ordinary ``connection_lost``). ``RequestHandler.close()`` would not do: it only
  stops after the request in progress, and a connection still waiting for its first request (exactly the
  flood's sockets) stays open.
* A connection is busy from when ``request_started`` sees its request (the first middleware calls it,
  reaching the limiter through ``request.protocol``, the handler) until its response is completely
  written. The end is reported through aiohttp's access-log hook (``access_log_class``, an
  ``AbstractAccessLogger``): aiohttp calls ``log()`` once the response's last byte is handed to the
  transport (or the client is gone), which is when an access log is written too. The hook logs nothing
  (health checks and scrapes every few seconds would drown the real logs, and a request line can carry what
  must not be logged). Marking it idle in a middleware instead would let a response still waiting to be
  written be cut off by an eviction.
* The limits and the idle timeout are the handler's keyword options, the ones ``AppRunner`` passes through
  (``max_line_size``, ``max_field_size``, ``max_headers``, ``keepalive_timeout``, ``lingering_time``);
  aiohttp 3.14 starts the keep-alive timer when a connection is made, so it also closes a connection that
  never completes its first request. aiohttp's own log lines go to the ``logger`` option, a logger whose
  filter keeps an exception's type and drops its text: aiohttp's messages can quote the raw request line or
  headers, a token included.
* Not possible through a public API: the response to a request aiohttp could not parse (an oversized or
  malformed request line or header). aiohttp builds it in ``RequestHandler.handle_error()``, a text/plain
  body logged with the exception's text, and no middleware, signal (not even ``on_response_prepare``: there
  is no route) or option comes in between. ``JsonErrorHandler`` overrides that one method, and because
  ``web.Server()``, the public protocol factory, always builds the base class, it is built here with the
  constructor's ``(manager, *, loop, **options)`` signature. tests/endpoint/test_aiohttp_contract.py fails
  if aiohttp changes either, or stops calling the access-log hook after a response.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from agent.core.serving.limits import BUSY_RESPONSE, ConnectionLimiter, refuse

log = logging.getLogger("agent.core.serving")

MAX_LINE_BYTES = 4096
"""Longest request line (method, path, query)."""
MAX_FIELD_BYTES = 4096
"""Longest header line."""
MAX_HEADERS = 64
"""Most headers in one request."""
LINGERING_TIME = 1.0
"""Seconds aiohttp keeps reading (and discarding) an unread request body after answering."""

OnMalformed = Callable[[int], None]
"""Told the status of each request aiohttp could not parse (e.g. to count it in the metrics)."""
ErrorText = Callable[[int], str]
"""The fixed message of an error body, by status: never request data."""


def default_error_text(status: int) -> str:
    """``bad request``, ``request body too large``, else ``request failed``."""
    return {400: "bad request", 413: "request body too large"}.get(status, "request failed")


class _ExceptionTypeOnly(logging.Filter):
    """Keep the type of a logged exception, drop its text and traceback (they can quote the request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {type(record.exc_info[1]).__name__}"
            record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_QUIET = _ExceptionTypeOnly()


def quiet_logger(name: str) -> logging.Logger:
    """The logger ``name`` for aiohttp's connection handler: exception texts and tracebacks dropped."""
    logger = logging.getLogger(name)
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    return logger


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering requests it cannot parse with a fixed JSON error body; on a
    listener's connection (see LimitedConnection), also the ConnectionLimiter's view of it."""

    __slots__ = ("_error_text", "_on_malformed", "client", "connection_busy", "connection_gone")

    def __init__(
        self,
        manager: web.Server,
        *,
        on_malformed: OnMalformed | None,
        error_text: ErrorText = default_error_text,
        **options: Any,
    ) -> None:
        super().__init__(manager, **options)
        self._on_malformed = on_malformed
        self._error_text = error_text
        self.connection_busy: Callable[[], None] | None = None
        """Set by LimitedConnection: tells the ConnectionLimiter that a request on this connection is being
        handled (what ``request_started`` calls, reaching it from the request in one step)."""
        self.connection_gone: Callable[[], None] | None = None
        """Set by LimitedConnection: tells the ConnectionLimiter that this connection is closed."""
        self.client: str | None = None
        """The client's address, what ``request.remote`` says of every request on this connection: worked
        out once when connected, not for each request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # As aiohttp's BaseRequest.remote puts it.
        peer = self.peername
        self.client = str(peer[0]) if isinstance(peer, (list, tuple)) else None if peer is None else str(peer)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.connection_gone is not None:
            self.connection_gone()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (oversized or malformed): a fixed JSON body.

        aiohttp's default would log the exception with its text, which can quote the raw request line or
        headers, a token included; we log the exception type only."""
        log.debug("malformed request from %s: %s", request.remote, type(exc).__name__ if exc else status)
        if self._on_malformed is not None:
            self._on_malformed(status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        response = web.json_response({"error": self._error_text(status)}, status=status)
        response.force_close()
        return response


def _response_written(limiter: ConnectionLimiter) -> type[AbstractAccessLogger]:
    """An access-log class that writes no log: it tells ``limiter`` a connection's response is done."""

    class _ResponseWritten(AbstractAccessLogger):
        __slots__ = ()

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            limiter.idle(request.transport)

    return _ResponseWritten


class LimitedConnection(asyncio.Protocol):
    """One accepted connection, counted by the ConnectionLimiter: refused (the busy 503, no aiohttp handler
    built), or handed over to aiohttp's handler, which then gets the transport's callbacks directly
    (``transport.set_protocol()``, public asyncio API: nothing in between on every read)."""

    __slots__ = ("_busy_response", "_limiter", "_linger", "_new_handler")

    def __init__(
        self,
        new_handler: Callable[[], JsonErrorHandler],
        limiter: ConnectionLimiter,
        busy_response: bytes = BUSY_RESPONSE,
    ) -> None:
        self._new_handler = new_handler
        self._limiter = limiter
        self._busy_response = busy_response
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        limiter = self._limiter
        if not limiter.admit(transport):
            self._linger = refuse(transport, self._busy_response)
            return
        handler = self._new_handler()
        handler.connection_busy = functools.partial(limiter.busy, transport)
        handler.connection_gone = functools.partial(limiter.gone, transport)
        transport.set_protocol(handler)
        handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        pass  # only a refused connection's, never read: the 503 is its whole answer

    def eof_received(self) -> bool | None:
        return None  # the transport closes once the client has half-closed

    def connection_lost(self, exc: BaseException | None) -> None:
        # Only a refused connection's (an admitted one's goes to its handler): nothing was counted.
        if self._linger is not None:
            self._linger.cancel()


def request_started(request: web.BaseRequest) -> str | None:
    """Call first thing for every request (from the outermost middleware): its connection becomes busy.
    Returns the client's address (``request.remote``), which the connection already knows.

    The connection is found from the request's handler (``request.protocol``, public aiohttp API), so a
    middleware needs no reference to the listener serving it; in one step, since it runs for every
    request."""
    handler = request.protocol
    if not isinstance(handler, JsonErrorHandler) or handler.connection_busy is None:
        return request.remote  # not a connection of ours
    handler.connection_busy()
    return handler.client


def connection_factory(
    manager: web.Server,
    limiter: ConnectionLimiter,
    *,
    idle_timeout: float,
    logger: logging.Logger,
    on_malformed: OnMalformed | None = None,
    error_text: ErrorText = default_error_text,
    busy_response: bytes = BUSY_RESPONSE,
) -> Callable[[], LimitedConnection]:
    """The protocol factory of a listener: connections of ``manager`` (``AppRunner.server``), at most
    ``limiter.limit`` of them, each closed after ``idle_timeout`` seconds without a complete request (before
    the first, or between two); aiohttp logs through ``logger`` (see ``quiet_logger``)."""
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {
        "loop": loop,
        "keepalive_timeout": idle_timeout,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_FIELD_BYTES,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGERING_TIME,
        "logger": logger,
        # aiohttp builds the access logger only when ``access_log`` is set; ours writes nothing to it.
        "access_log": logger,
        "access_log_class": _response_written(limiter),
    }

    def handler() -> JsonErrorHandler:
        return JsonErrorHandler(manager, on_malformed=on_malformed, error_text=error_text, **options)

    def connection() -> LimitedConnection:
        return LimitedConnection(handler, limiter, busy_response)

    return connection
