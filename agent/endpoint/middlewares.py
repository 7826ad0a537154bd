"""What every request goes through before and after its handler: the safety net, the gate, the accounting.

* The safety net (the only middleware) turns every error into a JSON body with a fixed message and an
  unexpected exception into a generic 500 whose log line names the type only (its text may quote a value
  or the request); then it counts the request (metrics, the audit log of secret and file reads). First of
  all it tells the connection cap that the connection is busy (``request_started``).
* The gate refuses a request addressed by a ``Host`` that is not loopback or configured (421: DNS
  rebinding, see ``limits.py``), then one carrying any proxy header (``X-Forwarded-*``, ``Forwarded``,
  ``X-Real-IP``, ``Via``...: 400, the endpoint is for processes in the pod, and a request relayed by a proxy
  carries whatever headers the proxy's client chose), then requires ``X-Secrets-Agent-Token`` on
  everything but the OpenAPI document (compared in constant time): missing -> 401, wrong -> 403.
* ``security_headers`` (an ``on_response_prepare`` hook, so it also covers aiohttp's own responses) adds
  ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.core.serving import request_started
from agent.endpoint.audit import AUDIT_RESULTS, AuditKey
from agent.endpoint.limits import proxy_header
from agent.endpoint.responses import SECURITY_HEADERS, STATUS_MESSAGES, error_response, from_http_exception
from agent.endpoint.routes import AUDITED, ROUTE_OPENAPI, ROUTE_SECRET, route_of
from agent.endpoint.state import AUDIT_RESULT, AUDIT_VERSION, STATE, STREAMING, EndpointState
from agent.endpoint.token import TOKEN_HEADER, token_matches

log = logging.getLogger("agent.endpoint.middlewares")

HOST_REFUSED = (
    "the Host header must name the endpoint by a loopback address (127.0.0.1, localhost or [::1], any port) "
    "or a name in server.allowed_hosts"
)
"""The body of a 421: the ``Host`` value itself is never echoed."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def safety_net(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Outermost: JSON for every error, a generic 500 for surprises, then metrics and the audit log."""
    request_started(request)
    state = request.app[STATE]
    route = route_of(request)
    try:
        response = await _gate(request, handler, route)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = from_http_exception(exc)
    except asyncio.CancelledError:
        # The client went away (handler cancellation): a stream that was flowing ended normally.
        _account(request, state, route, 200 if request.get(STREAMING) else 499)
        raise
    except Exception as exc:
        # Never the exception text: it may quote a value or the request.
        log.error("internal error while serving %s: %s", route, type(exc).__name__)
        response = error_response(500, STATUS_MESSAGES[500])
    _account(request, state, route, response.status)
    return response


def _account(request: web.Request, state: EndpointState, route: str, status: int) -> None:
    if state.metrics is not None:
        state.metrics.request(route, status)
    if state.audit and route in AUDITED:
        # Only assigned names and rendered paths are logged: anything else is the client's free text (see
        # AuditKey), which could be a value pasted into the URL.
        name: str | None
        if route == ROUTE_SECRET:
            name = request.match_info.get("name")
            if name not in state.store.specs:
                name = None
        else:
            name = request.match_info.get("path")
            if name is None or not state.known_file(name):
                name = None
        result = request.get(AUDIT_RESULT) or AUDIT_RESULTS.get(status, "error")
        state.audit_trail.record(AuditKey(name, request.get(AUDIT_VERSION), request.remote, result, status))


async def _gate(request: web.Request, handler: _Handler, route: str) -> web.StreamResponse:
    """Refuse foreign ``Host`` values and proxied requests, then require the token everywhere except the
    OpenAPI document.

    Called by ``safety_net`` rather than registered as a second middleware: each aiohttp middleware is
    one more coroutine layer on every request."""
    headers = request.headers
    if not request.app[STATE].hosts.allows(headers.get("Host")):
        request[AUDIT_RESULT] = "wrong_host"
        return error_response(421, HOST_REFUSED)
    proxied = proxy_header(headers)
    if proxied is not None:
        request[AUDIT_RESULT] = "forwarded"
        return error_response(
            400,
            f"forwarded requests are refused ({proxied} header present): "
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


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Nothing the endpoint returns may be cached or content-sniffed by anything between app and agent."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
