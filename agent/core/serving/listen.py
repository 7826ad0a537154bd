"""Listening: bind an address, accept connections, serve an aiohttp application on them until cancelled.

The accept loop is ours rather than asyncio's (``loop.create_server``): when the process runs out of file
descriptors, asyncio's loop logs ``socket.accept() out of system resource`` with a traceback up to
``backlog`` times a second per listener, and at shutdown a traceback for every retry it had scheduled
(66,000 lines in 20 s were seen). Ours logs one line per burst with a count, waits, and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from agent.core.serving.connection import (
    ErrorText,
    OnMalformed,
    connection_factory,
    default_error_text,
    quiet_logger,
    request_started,
)
from agent.core.serving.hosts import HostPolicy
from agent.core.serving.limits import BUSY_RESPONSE, BurstLog, ConnectionLimiter, fit_to_fd_limit
from agent.errors import AgentError

log = logging.getLogger("agent.core.serving")

LISTEN_BACKLOG = 512
ACCEPT_RETRY_DELAY = 0.5
"""Seconds between tries to accept while the process is out of file descriptors (or buffers)."""
TLS_HANDSHAKE_TIMEOUT = 10.0
"""Most seconds a TLS client gets to finish its handshake (the idle timeout when shorter). Until then it is
not a connection the cap counts: handshakes in progress are bounded by their own count (the cap) instead."""

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_middleware(
    hosts: HostPolicy | None, host_error: str, request_timeout: float | None
) -> Middleware:
    """The outermost middleware of a listener whose app does not do it itself: the connection is busy, the
    ``Host`` is checked, the handler gets at most ``request_timeout`` seconds (a body sent a byte a
    minute, a handler stuck on something)."""

    @web.middleware
    async def listener_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        request_started(request)
        if hosts is not None and not hosts.allows(request.headers.get("Host")):
            return web.json_response({"error": host_error}, status=421, headers={"Cache-Control": "no-store"})
        if request_timeout is None:
            return await handler(request)
        try:
            async with asyncio.timeout(request_timeout) as deadline:
                return await handler(request)
        except TimeoutError:
            if not deadline.expired():
                raise
            response = web.json_response({"error": "request took too long"}, status=408)
            response.force_close()
            return response

    return listener_middleware


async def _bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (one port for all, even with port 0)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            bound_port = sockets[0].getsockname()[1] if len(sockets) > 1 else port
            sock.bind((address[0], bound_port, *address[2:]))
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Acceptor:
    """Accepts connections on one listening socket and hands them to the protocol factory."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        name: str,
        ssl_context: ssl.SSLContext | None,
        max_handshakes: int,
        handshake_timeout: float,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._ssl = ssl_context
        self._max_handshakes = max_handshakes
        self._handshake_timeout = handshake_timeout
        self._handshakes: set[asyncio.Task[None]] = set()
        self._failures = BurstLog(
            log,
            f"{name}: cannot accept connections: out of file descriptors or buffers (ulimit -n); "
            "they wait in the backlog, retrying",
            f"{name}: %(count)d more failed accepts, %(seconds).0fs into the shortage",
            f"{name}: accepting connections again; %(count)d more accepts had failed, %(seconds).0fs in all",
        )
        self._errors = BurstLog(
            log,
            f"{name}: accepting a connection failed; retrying",
            f"{name}: %(count)d more failed accepts, %(seconds).0fs in",
            f"{name}: accepting connections again; %(count)d more accepts had failed, %(seconds).0fs in all",
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(self._sock)
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as error:
                    # asyncio's own loop logs and carries on after any accept error; so do we, counted.
                    burst = self._failures if error.errno in _OUT_OF_RESOURCES else self._errors
                    log.debug(
                        "accept failed: %s", errno.errorcode.get(error.errno or 0, type(error).__name__)
                    )
                    burst.note()
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)  # a back-off: nothing to wait on but time
                    continue
                self._failures.end()
                self._errors.end()
                await self._start(conn)
        finally:
            for task in self._handshakes:
                task.cancel()

    async def _start(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if self._ssl is None:
            # No I/O to wait for: the protocol is connected within this loop iteration.
            with contextlib.suppress(OSError):
                await loop.connect_accepted_socket(self._factory, conn)
            return
        if len(self._handshakes) >= self._max_handshakes:
            conn.close()  # a flood of handshakes that never finish: nothing to answer before TLS
            return
        task = asyncio.create_task(self._handshake(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            conn.close()  # a client that is not speaking TLS, or too slowly: asyncio has closed the transport


def _cannot_listen(words: tuple[str, str], host: str, port: int, error: OSError) -> AgentError:
    subject, hint = words
    # The errno's own text: asyncio's strerror would repeat the address as a tuple.
    reason = os.strerror(error.errno) if error.errno else type(error).__name__
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return AgentError(f"{subject} cannot listen on {address}: {reason}; {hint}")


async def serve_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    max_connections: int,
    idle_timeout: float,
    shutdown_timeout: float,
    routes: str | None = None,
    max_connections_setting: str = "max_connections",
    hosts: HostPolicy | None = None,
    host_error: str = "unknown Host",
    request_timeout: float | None = None,
    app_marks_requests: bool = False,
    handler_cancellation: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    on_malformed: OnMalformed | None = None,
    error_text: ErrorText = default_error_text,
    busy_response: bytes = BUSY_RESPONSE,
    logger_name: str | None = None,
    scheme: str | None = None,
    started: Callable[[int], None] | None = None,
    on_limiter: Callable[[ConnectionLimiter | None], None] | None = None,
    cannot_listen: tuple[str, str] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled, then stop within ``shutdown_timeout`` seconds. Every
    listener of the agent and the webhook is served by this, with the same defences:

    * at most ``max_connections`` connections (lowered to what the open-file limit allows); when full a
      newcomer evicts the connection idle the longest, and only when all are busy is it answered 503
      (ConnectionLimiter); refusals and accept failures are logged once per burst, with a count;
    * a connection without a complete request for ``idle_timeout`` seconds is closed (before its first
      request too: a half-sent header is idle), request lines and headers are bounded, a request aiohttp
      cannot parse gets a JSON 400 and a log line without its text;
    * unless ``app_marks_requests`` (the app's first middleware calls ``request_started`` and checks hosts
      itself), an outermost middleware marks requests, refuses a ``Host`` ``hosts`` does not allow (421
      ``host_error``) and answers 408 after ``request_timeout`` seconds.

    ``name`` is the listener in log lines (``<name> listening on <scheme>HOST:PORT (<routes>)``; the
    scheme is ``https://`` with TLS, else none unless given). An address that cannot be bound raises, before
    ``started`` is called, the OSError, or with ``cannot_listen=(subject, hint)`` one AgentError line:
    ``<subject> cannot listen on HOST:PORT: <reason>; <hint>`` (the hint names the setting to change).
    ``started`` gets the bound port (useful with port 0), ``on_limiter`` the limiter (then None once
    stopped)."""
    limit = fit_to_fd_limit(max_connections, name=name, setting=max_connections_setting)
    limiter = ConnectionLimiter(limit, name=name, setting=max_connections_setting)
    if not app_marks_requests:
        app.middlewares.insert(0, _request_middleware(hosts, host_error, request_timeout))
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    manager = runner.server
    assert manager is not None
    factory = connection_factory(
        manager,
        limiter,
        idle_timeout=idle_timeout,
        logger=quiet_logger(logger_name or f"{log.name}.aiohttp"),
        on_malformed=on_malformed,
        error_text=error_text,
        busy_response=busy_response,
    )
    sockets: list[socket.socket] = []
    accepting: list[asyncio.Task[None]] = []
    try:
        try:
            sockets = await _bind(host, port, LISTEN_BACKLOG)
        except OSError as error:
            if cannot_listen is None:
                raise
            raise _cannot_listen(cannot_listen, host, port, error) from None
        if on_limiter is not None:
            on_limiter(limiter)
        for sock in sockets:
            acceptor = _Acceptor(
                sock,
                factory,
                name=name,
                ssl_context=ssl_context,
                max_handshakes=limit,
                handshake_timeout=min(idle_timeout, TLS_HANDSHAKE_TIMEOUT),
            )
            accepting.append(asyncio.create_task(acceptor.run(), name=f"{name} accept"))
        bound = int(sockets[0].getsockname()[1])
        if scheme is None:
            scheme = "https://" if ssl_context is not None else ""
        shown = host if ":" not in host else f"[{host}]"
        log.info("%s listening on %s%s:%d%s", name, scheme, shown, bound, f" ({routes})" if routes else "")
        if started is not None:
            started(bound)
        done, _ = await asyncio.wait(accepting, return_when=asyncio.FIRST_COMPLETED)  # until cancelled
        for task in done:
            task.result()  # an accept loop that failed: raise its error
    finally:
        for task in accepting:
            task.cancel()
        await asyncio.gather(*accepting, return_exceptions=True)
        for sock in sockets:
            sock.close()
        await runner.cleanup()
        if on_limiter is not None:
            on_limiter(None)
