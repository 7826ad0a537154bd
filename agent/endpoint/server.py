"""The local endpoint: apps in the pod ask for their secrets over HTTP on loopback.

It serves from memory only (the SnapshotStore): it cannot reach the backend, read a file by name or serve a
secret that is not assigned to this agent. Defences, after the AWS Secrets Manager Agent's SSRF defence:

* every ``/v1`` request carries ``X-Secrets-Agent-Token`` (compared in constant time): missing -> 401,
  wrong -> 403; requests carrying ``X-Forwarded-For`` or ``Forwarded`` are refused before that (400): the
  endpoint is for processes in the pod, and a request relayed by a proxy carries whatever headers the
  proxy's client chose;
* small limits on the request line, headers and body; an idle timeout that closes connections which send
  nothing (or half a request); and a connection cap that, when full, closes the connection idle the
  longest instead of refusing the newcomer, so a flood of idle sockets cannot starve a real client;
* every error is a JSON body with a fixed message: nothing from the request (least of all the token) and
  no exception text; unexpected exceptions become a generic 500 whose log line names the type only.

Routes (``agent/endpoint/openapi.json`` is the reference, served at ``/openapi.json`` without a token):
``GET /v1/secrets/{name}`` (raw bytes, or ``?format=json``; ETag, If-None-Match, long-poll ``?wait=``),
``GET /v1/secrets`` (names and versions), ``GET /v1/events`` (Server-Sent Events on rotation),
``POST /v1/refresh`` (check the backend now).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import email.utils
import importlib.resources
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from agent.config import is_loopback, parse_delay
from agent.core.model import Fetched
from agent.core.store import SnapshotStore
from agent.endpoint.token import TOKEN_HEADER, token_matches
from agent.errors import AgentError
from agent.observe.logs import fields
from agent.observe.metrics import Metrics

log = logging.getLogger("agent.endpoint.server")
audit_log = logging.getLogger("agent.audit")

ROUTE_SECRET = "/v1/secrets/{name}"  # noqa: S105 - a route, not a password
ROUTE_SECRETS = "/v1/secrets"
ROUTE_EVENTS = "/v1/events"
ROUTE_REFRESH = "/v1/refresh"
ROUTE_OPENAPI = "/openapi.json"
ROUTE_UNMATCHED = "unmatched"
"""The ``route`` metric label of requests that match no route (or are not even valid HTTP)."""

MAX_BODY_BYTES = 1024
"""Largest request body accepted; only ``POST /v1/refresh`` takes one, and ignores it."""
MAX_LINE_BYTES = 4096
"""Longest request line (method, path, query) and so the longest name one can ask for."""
MAX_FIELD_BYTES = 4096
"""Longest header line."""
MAX_HEADERS = 64
"""Most headers in one request."""
IDLE_TIMEOUT = 15.0
"""Seconds a connection may sit without a complete request (before the first, or between two)."""
BODY_TIMEOUT = 5.0
"""Seconds a request body may take to arrive."""
SSE_PING_INTERVAL = 15.0
"""Seconds between keep-alive comments on an idle event stream (proxies and clients drop silent ones)."""
SHUTDOWN_GRACE = 2.0
"""Seconds in-flight requests get to finish when the endpoint stops; long-polls and streams end at once."""
LISTEN_BACKLOG = 512
REFUSED_LINGER = 1.0
"""Seconds a refused connection (all busy) is kept half-closed so that its client reads the 503."""
RETRY_AFTER_SECONDS = 1


# -- responses -----------------------------------------------------------------------------------------

# Fixed messages for statuses aiohttp produces itself; nothing from the request is ever echoed.
_STATUS_MESSAGES = {
    400: "bad request",
    401: "missing token",
    403: "invalid token",
    404: "not found",
    405: "method not allowed",
    408: "request body took too long",
    413: "request body too large",
    500: "internal error",
}


SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""On every response: nothing the endpoint returns may be cached or content-sniffed on the way."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``. ``message`` must be a fixed text, never request data."""
    return web.json_response({"error": message}, status=status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (no route, wrong method, body too large) as our JSON error bodies."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, _STATUS_MESSAGES.get(exc.status, "request failed"), headers)


def etag_of(item: Fetched) -> str:
    """The quoted strong ETag of a value: version and CRC32C, so a re-created version 1 still differs."""
    return f'"{item.version}-{item.crc32c:08x}"'


def rfc3339(unix_time: float) -> str:
    """``2024-05-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value_headers(item: Fetched) -> dict[str, str]:
    return {
        "X-Secret-Version": item.version,
        "ETag": etag_of(item),
        "Last-Modified": email.utils.formatdate(item.fetched_at, usegmt=True),
        # Also set for every response by _security_headers; here too, so the hot path finds them present.
        **SECURITY_HEADERS,
    }


def _value_response(item: Fetched, as_json: bool, headers: dict[str, str]) -> web.Response:
    if not as_json:
        return web.Response(body=item.data, content_type="application/octet-stream", headers=headers)
    body: dict[str, str] = {"name": item.name, "version": item.version}
    try:
        body.update(value=item.data.decode("utf-8"), encoding="utf-8")
    except UnicodeDecodeError:
        body.update(value=base64.b64encode(item.data).decode("ascii"), encoding="base64")
    body["updated"] = rfc3339(item.fetched_at)
    return web.json_response(body, headers=headers)


# -- request parsing ---------------------------------------------------------------------------------

def parse_wait(raw: str | None, cap: float) -> float | None:
    """``?wait=`` -> seconds capped at ``cap``; None when absent. ``0`` means do not wait.

    Raises ValueError (whose text must not be shown: it quotes the input) for anything else."""
    if raw is None:
        return None
    return min(parse_delay(raw), cap)


def _matches(if_none_match: tuple[Any, ...] | None, item: Fetched) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``*`` or any listed tag equal to the current one."""
    if not if_none_match:
        return False
    current = etag_of(item)[1:-1]
    return any(tag.value in ("*", current) for tag in if_none_match)


# -- shared state --------------------------------------------------------------------------------------


@dataclass
class EndpointState:
    """What the handlers need; one per application."""

    store: SnapshotStore
    token: str
    refresh: Callable[[], None]
    audit: bool
    max_wait: float
    metrics: Metrics | None
    ping_interval: float
    openapi: bytes
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the endpoint shuts down: long-polls answer and event streams end at once."""
    audit_trail: AuditLog = field(default_factory=lambda: AuditLog())
    value_headers: dict[str, tuple[Fetched, dict[str, str]]] = field(default_factory=dict)
    """Per name: the item last served and its headers (an ETag and a date to format, every request)."""
    _stopped: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def wait_for_change(self, after: int, within: float) -> None:
        """Return when the store's generation passes ``after``, ``within`` seconds pass, or we stop."""
        if not self.stopping.is_set():
            # No task per waiter: a rotation wakes 1,000 long-polls as 1,000 callbacks.
            await self.store.wait_for_generation(after, within, unless=self._stop_future())

    def _stop_future(self) -> asyncio.Future[None]:
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
        return self._stopped

    def stop(self) -> None:
        """The endpoint shuts down: wake every long-poll and event stream."""
        self.stopping.set()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def headers_of(self, item: Fetched) -> dict[str, str]:
        """The value headers of ``item`` (a fresh dict: aiohttp adopts it), computed once per version."""
        cached = self.value_headers.get(item.name)
        if cached is None or cached[0] is not item:
            cached = self.value_headers[item.name] = (item, _value_headers(item))
        return dict(cached[1])


STATE = web.AppKey("secrets_agent_endpoint", EndpointState)
_AUDIT_RESULT = web.RequestKey("audit_result", str)
_AUDIT_VERSION = web.RequestKey("audit_version", str)
_STREAMING = web.RequestKey("streaming", bool)


# -- middlewares ---------------------------------------------------------------------------------------


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return ROUTE_UNMATCHED if resource is None else resource.canonical


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _safety_net(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Outermost: JSON for every error, a generic 500 for surprises, then metrics and the audit log."""
    state = request.app[STATE]
    protocol = request.protocol
    if isinstance(protocol, _EndpointProtocol):
        protocol.request_started()
    route = _route_of(request)
    try:
        response = await _gate(request, handler, route)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _from_http_exception(exc)
    except asyncio.CancelledError:
        # The client went away (handler cancellation): a stream that was flowing ended normally.
        _account(request, state, route, 200 if request.get(_STREAMING) else 499)
        raise
    except Exception as exc:
        # Never the exception text: it may quote a value or the request.
        log.error("internal error while serving %s: %s", route, type(exc).__name__)
        response = error_response(500, _STATUS_MESSAGES[500])
    _account(request, state, route, response.status)
    return response


def _account(request: web.Request, state: EndpointState, route: str, status: int) -> None:
    if state.metrics is not None:
        state.metrics.request(route, status)
    if state.audit and route == ROUTE_SECRET:
        _audit(request, status)


_AUDIT_RESULTS = {
    200: "ok",
    304: "not_modified",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "unknown",
    499: "client_gone",
    503: "not_fetched",
}


def _audit(request: web.Request, status: int) -> None:
    """Record a secret read: name, version, client, result. Never the value, never the token.

    Only assigned names are logged: any other name is the client's free text (it could even be a value
    pasted into the URL by mistake), so an unknown name shows as None."""
    state = request.app[STATE]
    name: str | None = request.match_info.get("name")
    if name not in state.store.specs:
        name = None
    result = request.get(_AUDIT_RESULT) or _AUDIT_RESULTS.get(status, "error")
    state.audit_trail.record(AuditKey(name, request.get(_AUDIT_VERSION), request.remote, result, status))


class AuditKey(NamedTuple):
    """What the audit log says about a read; reads with equal keys are counted together (a NamedTuple:
    built and hashed for every read, a frozen dataclass costs three times as much)."""

    secret: str | None
    version: str | None
    client: str | None
    result: str
    status: int


AUDIT_REPEAT_WINDOW = 10.0
"""Seconds over which identical reads (same secret, version, client and result) are counted into one line."""


class AuditLog:
    """The audit log of secret reads: the first read of each AuditKey is logged at once; identical reads in
    the next ``window`` seconds are counted and logged as one line (``reads=N``) when the window ends.

    A log line costs about 45 µs (record, redaction, JSON, write): more than serving the read itself, so
    one line per read would halve the endpoint's throughput for an app that polls in a loop."""

    def __init__(self, window: float = AUDIT_REPEAT_WINDOW) -> None:
        self.window = window
        self._repeats: dict[AuditKey, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def record(self, key: AuditKey) -> None:
        repeats = self._repeats.get(key)
        if repeats is not None:
            self._repeats[key] = repeats + 1
            return
        self._repeats[key] = 0
        _audit_line(key, 1)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def flush(self) -> None:
        """Log the counted repeats now and start a new window (also at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        repeats, self._repeats = self._repeats, {}
        for key, count in repeats.items():
            if count:
                _audit_line(key, count)


def _audit_line(key: AuditKey, reads: int) -> None:
    audit_log.info(
        "secret read: %s %s%s",
        key.secret or "(unknown name)",
        key.result,
        "" if reads == 1 else f" ({reads} reads)",
        extra=fields(
            secret=key.secret,
            version=key.version,
            client=key.client,
            result=key.result,
            status=key.status,
            reads=reads,
        ),
    )


async def _gate(request: web.Request, handler: _Handler, route: str) -> web.StreamResponse:
    """Refuse proxied requests, then require the token everywhere except the OpenAPI document.

    Called by ``_safety_net`` rather than registered as a second middleware: each aiohttp middleware is
    one more coroutine layer on every request."""
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        request[_AUDIT_RESULT] = "forwarded"
        return error_response(
            400,
            "forwarded requests are refused (X-Forwarded-For or Forwarded header present): "
            "call the endpoint directly from inside the pod",
        )
    if route == ROUTE_OPENAPI:
        return await handler(request)
    presented = request.headers.getall(TOKEN_HEADER, [])
    if not presented:
        return error_response(401, f"missing token: send it in the {TOKEN_HEADER} header")
    if len(presented) > 1:
        return error_response(400, f"send the {TOKEN_HEADER} header once")
    if not token_matches(presented[0], request.app[STATE].token):
        return error_response(403, "invalid token")
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Nothing the endpoint returns may be cached or content-sniffed by anything between app and agent.
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)


# -- handlers ------------------------------------------------------------------------------------------


_NO_QUERY: dict[str, str] = {}


async def _get_secret(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    name = request.match_info["name"]
    # Only exact local names: a dict lookup, never a path, a reference or a backend call.
    if name not in state.store.specs:
        return error_response(404, "unknown secret")
    # Most reads carry no query: skip parsing one.
    query = request.query if request.query_string else _NO_QUERY
    output = query.get("format", "raw")
    if output not in ("raw", "json"):
        return error_response(400, "format must be raw or json")
    try:
        wait = parse_wait(query.get("wait"), state.max_wait)
    except ValueError:
        return error_response(400, "wait must be a duration such as 30s, 500ms or 2m, or a number of seconds")
    if_none_match = request.if_none_match
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (wait or 0.0)
    while True:
        # Generation first: a publish between the two reads is then seen by the wait below.
        generation = state.store.generation
        item = state.store.snapshot.get(name)
        if item is not None and not _matches(if_none_match, item):
            request[_AUDIT_VERSION] = item.version
            return _value_response(item, output == "json", state.headers_of(item))
        remaining = deadline - loop.time()
        if remaining <= 0 or state.stopping.is_set():
            break
        await state.wait_for_change(generation, remaining)
    if item is None:
        return error_response(
            503, "not fetched yet: retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    request[_AUDIT_VERSION] = item.version
    return web.Response(status=304, headers=state.headers_of(item))


async def _list_secrets(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    snapshot = state.store.snapshot
    listed = []
    for name in sorted(state.store.specs):
        item = snapshot.get(name)
        listed.append(
            {
                "name": name,
                "version": None if item is None else item.version,
                "updated": None if item is None else rfc3339(item.fetched_at),
            }
        )
    return web.json_response({"secrets": listed})


def _rotation_event(item: Fetched) -> bytes:
    data = json.dumps({"name": item.name, "version": item.version, "time": rfc3339(item.fetched_at)})
    return f"event: rotated\ndata: {data}\n\n".encode()


async def _events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    store = state.store
    # The baseline is taken before the stream opens, so a change after the first byte is never missed.
    generation = store.generation
    seen = {name: etag_of(item) for name, item in store.snapshot.items.items()}
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    request[_STREAMING] = True
    loop = asyncio.get_running_loop()
    try:
        await response.write(b": connected\n\n")
        last_write = loop.time()
        while not state.stopping.is_set():
            quiet_for = loop.time() - last_write
            if quiet_for >= state.ping_interval:
                await response.write(b": ping\n\n")
                last_write = loop.time()
                continue
            await state.wait_for_change(generation, state.ping_interval - quiet_for)
            if store.generation == generation:
                continue
            generation = store.generation
            for name, item in sorted(store.snapshot.items.items()):
                tag = etag_of(item)
                if seen.get(name) != tag:
                    seen[name] = tag
                    await response.write(_rotation_event(item))
                    last_write = loop.time()
    except ConnectionError:
        pass  # the client hung up; nothing to tell anyone
    return response


async def _refresh(request: web.Request) -> web.StreamResponse:
    # Reading the body enforces client_max_size (413); the deadline stops a body that never arrives
    # from holding a connection slot.
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            await request.read()
    except TimeoutError:
        return error_response(408, _STATUS_MESSAGES[408])
    request.app[STATE].refresh()
    return web.json_response({"status": "refresh requested"}, status=202)


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[STATE].openapi, content_type="application/json")


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].stop()
    app[STATE].audit_trail.flush()


def load_openapi() -> bytes:
    """The OpenAPI 3 document of this endpoint (``agent/endpoint/openapi.json``, package data)."""
    return importlib.resources.files("agent.endpoint").joinpath("openapi.json").read_bytes()


def build_endpoint_app(
    *,
    store: SnapshotStore,
    token: str,
    refresh: Callable[[], None],
    audit: bool,
    max_wait: float,
    metrics: Metrics | None = None,
    ping_interval: float = SSE_PING_INTERVAL,
) -> web.Application:
    """The endpoint's aiohttp application; serve it with ``serve_endpoint`` (which adds the connection
    limits). ``refresh`` asks the sync loop to check the backend now; ``max_wait`` caps ``?wait=``."""
    app = web.Application(middlewares=[_safety_net], client_max_size=MAX_BODY_BYTES)
    app[STATE] = EndpointState(
        store=store,
        token=token,
        refresh=refresh,
        audit=audit,
        max_wait=max_wait,
        metrics=metrics,
        ping_interval=ping_interval,
        openapi=load_openapi(),
    )
    app.router.add_get(ROUTE_SECRETS, _list_secrets, allow_head=False)
    app.router.add_get(ROUTE_SECRET, _get_secret, allow_head=False)
    app.router.add_get(ROUTE_EVENTS, _events, allow_head=False)
    app.router.add_post(ROUTE_REFRESH, _refresh)
    app.router.add_get(ROUTE_OPENAPI, _openapi, allow_head=False)
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_on_shutdown)
    return app


# -- connections -------------------------------------------------------------------------------------

_BUSY_BODY = b'{"error": "too many connections: retry shortly"}'
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Retry-After: " + str(RETRY_AFTER_SECONDS).encode() + b"\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n" + _BUSY_BODY
)


class ConnectionLimiter:
    """At most ``limit`` open connections. When full, a newcomer closes the connection that has been idle
    (no request being handled) the longest; only when every connection is busy is the newcomer refused.

    Idle covers both a connection that never sent a byte and one stuck in the middle of its headers: the
    sockets a flood opens. A client whose request is being handled is never cut off.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: collections.OrderedDict[_EndpointProtocol, None] = collections.OrderedDict()
        self._busy: set[_EndpointProtocol] = set()
        self._last_refusal_log = float("-inf")

    @property
    def open(self) -> int:
        return len(self._idle) + len(self._busy)

    def admit(self, connection: _EndpointProtocol) -> bool:
        if self.open >= self.limit:
            if not self._idle:
                self._log_refusal()
                return False
            oldest, _ = self._idle.popitem(last=False)
            oldest.force_close()
        self._idle[connection] = None
        return True

    def busy(self, connection: _EndpointProtocol) -> None:
        if connection in self._idle:  # not when already evicted or gone
            del self._idle[connection]
            self._busy.add(connection)

    def idle(self, connection: _EndpointProtocol) -> None:
        if connection in self._busy:
            self._busy.discard(connection)
            self._idle[connection] = None  # the most recently active go last: evicted last

    def gone(self, connection: _EndpointProtocol) -> None:
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


class _EndpointProtocol(RequestHandler):
    """aiohttp's connection handler, counted by a ConnectionLimiter; JSON bodies for HTTP-level errors."""

    def __init__(
        self, manager: web.Server, *, limiter: ConnectionLimiter, metrics: Metrics | None, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._limiter = limiter
        self._metrics = metrics
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._limiter.admit(self):
            self._refuse(transport)
            return
        super().connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._refused = True
        transport.write(_BUSY_RESPONSE)
        # Half-close and drain instead of closing outright: closing a socket with the client's request
        # still unread sends a reset, and the client would never see the 503.
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            if self._linger is not None:
                self._linger.cancel()
            return
        self._limiter.gone(self)
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._limiter.busy(self)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            # Only once the response is written may the connection count as idle (and be evicted).
            self._limiter.idle(self)

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
        response = error_response(status, _STATUS_MESSAGES.get(status, "request failed"))
        response.force_close()
        return response


async def serve_endpoint(
    app: web.Application,
    host: str,
    port: int,
    *,
    max_connections: int,
    started: Callable[[int], None] | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled, then stop cleanly (streams and long-polls end).

    ``started`` gets the bound port (useful with port 0). At most ``max_connections`` connections are
    open at once (see ConnectionLimiter); a connection without a complete request for ``idle_timeout``
    seconds is closed."""
    if not is_loopback(host):
        log.warning(
            "the local endpoint listens on %s, which is not a loopback address: anything that can reach "
            "it can try the token (server.allow_remote)",
            host,
        )
    runner = web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    manager = runner.server
    assert manager is not None
    loop = asyncio.get_running_loop()
    limiter = ConnectionLimiter(max_connections)
    metrics = app[STATE].metrics
    # aiohttp's own options for each connection; access_log None: the audit log and metrics replace it.
    handler_options: dict[str, Any] = {
        "loop": loop,
        "keepalive_timeout": idle_timeout,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_FIELD_BYTES,
        "max_headers": MAX_HEADERS,
        "lingering_time": 1.0,
        "access_log": None,
    }

    def connection() -> _EndpointProtocol:
        return _EndpointProtocol(manager, limiter=limiter, metrics=metrics, **handler_options)

    server: asyncio.Server | None = None
    try:
        try:
            server = await loop.create_server(
                connection, host, port, backlog=LISTEN_BACKLOG, reuse_address=True
            )
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise AgentError(
                f"the local endpoint cannot listen on {host}:{port} (server.listen): {reason}"
            ) from None
        bound = server.sockets[0].getsockname()[1]
        log.info("local endpoint listening on http://%s:%d", host if ":" not in host else f"[{host}]", bound)
        if started is not None:
            started(bound)
        await asyncio.Event().wait()
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()
