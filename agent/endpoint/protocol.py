"""The per-connection plumbing between asyncio and aiohttp: the connection cap, the request size limits and
the idle timeout, and JSON bodies (with quiet logs) for requests aiohttp cannot parse.

What uses aiohttp's public API, and what cannot:

* ``EndpointConnection`` is a plain ``asyncio.Protocol`` that owns aiohttp's handler (composition, not a
  subclass). It asks the ConnectionLimiter first, answers a refused connection itself with the fixed busy
  503 (no aiohttp handler is ever built for it), and otherwise passes every transport callback on to the
  handler. Evicting an idle connection closes its transport (``asyncio.Transport.close()``: what was already
  written is flushed, then the handler sees an ordinary ``connection_lost``). ``RequestHandler.close()``
  would not do: it only stops after the request in progress, and a connection still waiting for its first
  request (exactly the flood's sockets) stays open.
* A connection is busy from when the safety-net middleware sees its request until its response is
  completely written. The end is reported through aiohttp's access-log hook (``access_log_class``, an
  ``AbstractAccessLogger``): aiohttp calls ``log()`` once the response's last byte is handed to the
  transport (or the client is gone), which is when an access log is written too. ``_ResponseWritten`` logs
  nothing; the audit log and metrics replace an access log. (Marking it idle in the middleware instead
  would let a response still waiting to be written be cut off by an eviction.)
* The limits and the idle timeout are the handler's keyword options, the ones ``AppRunner`` passes through
  (``max_line_size``, ``max_field_size``, ``max_headers``, ``keepalive_timeout``, ``lingering_time``); its
  own log lines go to ``agent.endpoint.aiohttp`` (the ``logger`` option), whose filter keeps an exception's
  type and drops its text: aiohttp's messages can quote the raw request line or headers, token included.
* Not possible through a public API: the response to a request aiohttp could not parse (an oversized or
  malformed request line or header). aiohttp builds it in ``RequestHandler.handle_error()``, a text/plain
  body logged with the exception's text, and no middleware, signal (not even ``on_response_prepare``: there
  is no route) or option comes in between. ``_JsonErrorHandler`` overrides that one method, and because
  ``web.Server()``, the public protocol factory, always builds the base class, it is built here with the
  constructor's ``(manager, *, loop, **options)`` signature. tests/endpoint/test_aiohttp_contract.py fails
  if aiohttp changes either, or stops calling the access-log hook after a response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from agent.endpoint.limits import ConnectionLimiter, refuse
from agent.endpoint.responses import error_response, status_message
from agent.endpoint.routes import ROUTE_UNMATCHED
from agent.observe.metrics import Metrics

log = logging.getLogger("agent.endpoint.protocol")
aiohttp_log = logging.getLogger("agent.endpoint.aiohttp")
"""The logger of aiohttp's connection handler (its ``logger`` option), with exception texts dropped."""

MAX_LINE_BYTES = 4096
"""Longest request line (method, path, query) and so the longest name one can ask for."""
MAX_FIELD_BYTES = 4096
"""Longest header line."""
MAX_HEADERS = 64
"""Most headers in one request."""
LINGERING_TIME = 1.0
"""Seconds aiohttp keeps reading (and discarding) an unread request body after answering."""


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


aiohttp_log.addFilter(_ExceptionTypeOnly())


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering requests it cannot parse with our JSON error body."""

    __slots__ = ("_metrics",)

    def __init__(self, manager: web.Server, *, metrics: Metrics | None, **options: Any) -> None:
        super().__init__(manager, **options)
        self._metrics = metrics

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (oversized or malformed): a fixed JSON body.

        aiohttp's default would log the exception with its text, which can quote the raw request line or
        headers, token included; we log the exception type only."""
        log.debug("malformed request from %s: %s", request.remote, type(exc).__name__ if exc else status)
        if self._metrics is not None:
            self._metrics.request(ROUTE_UNMATCHED, status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        response = error_response(status, status_message(status))
        response.force_close()
        return response


def _response_written(limiter: ConnectionLimiter) -> type[AbstractAccessLogger]:
    """An access-log class that writes no log: it tells ``limiter`` a connection's response is done."""

    class _ResponseWritten(AbstractAccessLogger):
        __slots__ = ()

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            limiter.idle(request.transport)

    return _ResponseWritten


class EndpointConnection(asyncio.Protocol):
    """One accepted connection: counted by the ConnectionLimiter, then served by aiohttp's handler."""

    __slots__ = ("_handler", "_limiter", "_linger", "_new_handler", "_transport")

    def __init__(self, new_handler: Callable[[], web.RequestHandler], limiter: ConnectionLimiter) -> None:
        self._new_handler = new_handler
        self._limiter = limiter
        self._handler: web.RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._limiter.admit(transport):
            self._linger = refuse(transport)
            return
        self._handler = self._new_handler()
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # A refused connection's request is never read: the 503 is its whole answer.
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handler is not None:
            self._handler.eof_received()
        return None  # as aiohttp's handler does: the transport closes once the client has half-closed

    def pause_writing(self) -> None:
        # aiohttp's write flow control (a response's drain) lives in its handler: pass these on too.
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._handler is None:  # refused: nothing was counted
            if self._linger is not None:
                self._linger.cancel()
            return
        assert self._transport is not None
        self._limiter.gone(self._transport)
        self._handler.connection_lost(exc)


def connection_factory(
    manager: web.Server, limiter: ConnectionLimiter, metrics: Metrics | None, *, idle_timeout: float
) -> Callable[[], EndpointConnection]:
    """The protocol factory for ``loop.create_server``: connections of ``manager`` (``AppRunner.server``),
    at most ``limiter.limit`` of them, each closed after ``idle_timeout`` seconds without a complete
    request (before the first, or between two)."""
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {
        "loop": loop,
        "keepalive_timeout": idle_timeout,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_FIELD_BYTES,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGERING_TIME,
        "logger": aiohttp_log,
        # aiohttp builds the access logger only when ``access_log`` is set; ours writes nothing to it.
        "access_log": aiohttp_log,
        "access_log_class": _response_written(limiter),
    }

    def handler() -> web.RequestHandler:
        return _JsonErrorHandler(manager, metrics=metrics, **options)

    def connection() -> EndpointConnection:
        return EndpointConnection(handler, limiter)

    return connection
