"""What every request goes through before and after its handler: the safety net, the gate, the accounting.

* The safety net turns every error into a JSON body with a fixed message and an unexpected exception into a
  generic 500 whose log line names the type only (its text may quote a value or the request); then it
  counts the request (metrics, the audit log of secret and file reads). First of all it tells the
  connection cap that the connection is busy (``request_started``).
* The gate refuses a request addressed by a ``Host`` that is not loopback or configured (421: DNS
  rebinding, see ``limits.py``), then one carrying any proxy header (``X-Forwarded-*``, ``Forwarded``,
  ``X-Real-IP``, ``Via``...: 400, the endpoint is for processes in the pod, and a request relayed by a proxy
  carries whatever headers the proxy's client chose), then requires ``X-Secrets-Agent-Token`` on
  everything but the OpenAPI document (compared in constant time): missing -> 401, twice -> 400,
  wrong -> 403. All three are decided in one pass over the raw header bytes.
* A request that matches no route, or a route but not its method, reaches ``Guard.unmatched`` (a catch-all
  route): through the gate too, then 404, or 405 with ``Allow``.

These are not aiohttp middlewares: ``Guard.route`` and ``Guard.read`` wrap each route's handler where it is
registered. An aiohttp middleware costs every request two more layers (aiohttp's own ``current_app`` one
comes with the first), a signal hook (``on_response_prepare``) two more coroutines; the endpoint answers a
read in about as much Python as a bare aiohttp handler does, so each of those showed in its throughput.
Every response is built with the security headers instead (``responses.py``, the handlers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web

from agent.core.serving import request_started
from agent.core.serving.hosts import HostPolicy
from agent.endpoint.audit import AUDIT_RESULTS
from agent.endpoint.limits import (
    PROXY_HEADERS,
    PROXY_PREFIXES,
    RAW_PROXY_HEADERS,
    RAW_PROXY_PREFIXES,
    proxy_family,
)
from agent.endpoint.responses import STATUS_MESSAGES, error_response, from_http_exception
from agent.endpoint.routes import ROUTE_ANY
from agent.endpoint.state import STREAMING, EndpointState, ReadResult
from agent.endpoint.token import TOKEN_HEADER, raw_token_matches, token_bytes

log = logging.getLogger("agent.endpoint.middlewares")

HOST_REFUSED = (
    "the Host header must name the endpoint by a loopback address (127.0.0.1, localhost or [::1], any port) "
    "or a name in server.allowed_hosts"
)
"""The body of a 421: the ``Host`` value itself is never echoed."""
MAX_HOST_VERDICTS = 256
"""``Host`` values whose verdict is remembered (clients send the same one or two over and over)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Read = Callable[[web.Request, str], Awaitable[ReadResult]]
"""A read's handler, given the request and its route's match (the secret's name, the file's path)."""
Answer = Callable[[web.Request, str], ReadResult | None]
"""The same read when it can answer at once, else None."""
RawHeaders = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Refusal:
    """Why the gate refused a request: the error it gets, and the audit result when the status does not say
    it."""

    status: int
    message: str
    result: str | None = None

    def response(self) -> web.Response:
        return error_response(self.status, self.message)


WRONG_HOST = Refusal(421, HOST_REFUSED, "wrong_host")
MISSING_TOKEN = Refusal(401, f"missing token: send it in the {TOKEN_HEADER} header")
TOKEN_TWICE = Refusal(400, f"send the {TOKEN_HEADER} header once")
WRONG_TOKEN = Refusal(403, "invalid token")


def _forwarded(family: str) -> Refusal:
    return Refusal(
        400,
        f"forwarded requests are refused ({family} header present): call the endpoint directly from inside "
        "the pod",
        "forwarded",
    )


_FORWARDED = {family: _forwarded(family) for family in (*PROXY_HEADERS.values(), *PROXY_PREFIXES.values())}
_HOST, _TOKEN, _PROXY = 0, 1, 2
"""What a header is to the gate, by its lower-cased raw name (the proxy families go by prefix)."""


class Gate:
    """``Host``, proxy headers and the token, in that order, from one pass over ``request.raw_headers``:
    the names lower-cased once each, no header decoded, the token compared as bytes in constant time."""

    def __init__(self, hosts: HostPolicy, token: str) -> None:
        self._hosts = hosts
        self._token = token_bytes(token)
        self._kinds = {b"host": _HOST, TOKEN_HEADER.lower().encode("ascii"): _TOKEN}
        self._kinds.update(dict.fromkeys(RAW_PROXY_HEADERS, _PROXY))
        self._host_verdicts: dict[bytes | None, bool] = {}
        """``Host`` value (None: no header) -> answered or not."""

    def check(self, raw_headers: RawHeaders, needs_token: bool = True) -> Refusal | None:
        """None when the request may go on, else why not (the first reason, in the order above)."""
        host: bytes | None = None
        token: bytes | None = None
        tokens = 0
        proxied: str | None = None
        """How the refusal names the first proxy header."""
        kinds = self._kinds
        for name, value in raw_headers:
            lower = name.lower()
            kind = kinds.get(lower)
            if kind is None:
                if proxied is None and lower.startswith(RAW_PROXY_PREFIXES):
                    proxied = proxy_family(lower)
            elif kind == _TOKEN:
                token = value
                tokens += 1
            elif kind == _HOST:
                if host is None:  # aiohttp refuses a second Host; as headers.get() would, the first
                    host = value
            elif proxied is None:
                proxied = RAW_PROXY_HEADERS[lower]
        allowed = self._host_verdicts.get(host)
        if allowed is None:
            allowed = self._judge_host(host)
        if not allowed:
            return WRONG_HOST
        if proxied is not None:
            return _FORWARDED[proxied]
        if not needs_token:
            return None
        if token is None:
            return MISSING_TOKEN
        if tokens > 1:
            return TOKEN_TWICE
        if not raw_token_matches(token, self._token):
            return WRONG_TOKEN
        return None

    def _judge_host(self, raw: bytes | None) -> bool:
        # As aiohttp decodes a header value for request.headers.
        allowed = self._hosts.allows(None if raw is None else raw.decode("utf-8", "surrogateescape"))
        if len(self._host_verdicts) < MAX_HOST_VERDICTS:
            self._host_verdicts[raw] = allowed
        return allowed


class Guard:
    """One endpoint's gate, safety net and accounting, around each of its routes' handlers."""

    def __init__(self, state: EndpointState) -> None:
        self._state = state
        self.gate = Gate(state.hosts, state.token)

    def route(self, route: str, handler: Handler, *, needs_token: bool = True) -> Handler:
        """``handler`` of ``route`` (its template, the metric label) behind the gate and the safety net."""
        gate, metrics = self.gate, self._state.metrics

        async def guarded(request: web.Request) -> web.StreamResponse:
            request_started(request)
            try:
                refused = gate.check(request.raw_headers, needs_token)
                response = await handler(request) if refused is None else refused.response()
            except asyncio.CancelledError:
                # The client went away (handler cancellation): a stream that was flowing ended normally.
                if metrics is not None:
                    metrics.request(route, 200 if request.get(STREAMING) else 499)
                raise
            except Exception as exc:
                response = _failure(route, exc)
            if metrics is not None:
                metrics.request(route, response.status)
            return response

        return guarded

    def read(
        self, route: str, parameter: str, assigned: Callable[[str], bool], read: Read, answer: Answer
    ) -> Handler:
        """``read`` of ``route`` behind the gate and the safety net, each request also written to the audit
        log. ``parameter`` names the route's match (the secret's name, the file's path), logged only when
        ``assigned`` says the configuration has it: anything else is the client's free text (see
        AuditKey), which could be a value pasted into the URL.

        ``answer`` is the same read when it has nothing to wait for (most of them: an app polling its
        secret), answered without a coroutine of its own, or None: then ``read`` answers."""
        gate, state, metrics = self.gate, self._state, self._state.metrics
        audit = state.audit_trail if state.audit else None

        async def guarded(request: web.Request) -> web.StreamResponse:
            client = request_started(request)
            key = request.match_info[parameter]
            version: str | None = None
            result: str | None = None
            try:
                refused = gate.check(request.raw_headers)
                if refused is None:
                    answered = answer(request, key)
                    response, version, result = await read(request, key) if answered is None else answered
                else:
                    response, result = refused.response(), refused.result
            except asyncio.CancelledError:
                # The client went away during a long-poll (handler cancellation).
                account(client, key, 499, None, None)
                raise
            except Exception as exc:
                response = _failure(route, exc)
            # account(), inline: this runs for every read.
            status = response.status
            if metrics is not None:
                metrics.request(route, status)
            if audit is not None:
                logged = result or AUDIT_RESULTS.get(status, "error")
                audit.read(key if assigned(key) else None, version, client, logged, status)
            return response

        def account(
            client: str | None, key: str, status: int, version: str | None, result: str | None
        ) -> None:
            if metrics is not None:
                metrics.request(route, status)
            if audit is not None:
                logged = result or AUDIT_RESULTS.get(status, "error")
                audit.read(key if assigned(key) else None, version, client, logged, status)

        return guarded

    async def unmatched(self, request: web.Request) -> web.StreamResponse:
        """The catch-all route's handler (behind ``route``): 405 with ``Allow`` when another route has this
        path with other methods, else 404. Asked of each route's resource through aiohttp's public
        ``resolve()``, as aiohttp's router would have answered without the catch-all."""
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource.canonical != ROUTE_ANY:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            return error_response(405, STATUS_MESSAGES[405], {hdrs.ALLOW: ",".join(sorted(allowed))})
        return error_response(404, STATUS_MESSAGES[404])


def _failure(route: str, exc: Exception) -> web.StreamResponse:
    """The JSON error of an exception out of a handler: aiohttp's own (413...) or a surprise (500)."""
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return from_http_exception(exc)
    # Never the exception text: it may quote a value or the request.
    log.error("internal error while serving %s: %s", route, type(exc).__name__)
    return error_response(500, STATUS_MESSAGES[500])
