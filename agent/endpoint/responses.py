"""What every error the endpoint sends looks like, and the headers every response carries.

An error is ``{"error": "<fixed message>"}``. It has a module of its own because three layers answer with
errors (the middlewares, the handlers, and the connection plumbing that answers requests aiohttp could not
even parse) and all of them must build them the same way, and never from request data: the request line, a
header or an exception's text can carry the token or a value.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict, istr

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of the 503s (a secret not fetched yet, every connection busy)."""

STATUS_MESSAGES = {
    400: "bad request",
    401: "missing token",
    403: "invalid token",
    404: "not found",
    405: "method not allowed",
    408: "request body took too long",
    413: "request body too large",
    500: "internal error",
}
"""Fixed messages for the statuses aiohttp produces itself; nothing from the request is ever echoed."""

SECURITY_HEADERS = {hdrs.CACHE_CONTROL: "no-store", hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff"}
"""On every response: nothing the endpoint returns may be cached or content-sniffed on the way. Every
response is built with them (by the functions here, and by the handlers' value headers): no
``on_response_prepare`` hook adds them, since a hook is two more coroutines on every request.

The names are ``istr`` (aiohttp's ``hdrs`` constants), as every header name a response is built with here:
multidict then has no case-folded copy of the name to make, each time a response copies or writes them."""

JSON = "application/json; charset=utf-8"
"""The ``Content-Type`` of every JSON body (what ``web.json_response`` sets)."""


def headers_with(content_type: str | None, extra: Mapping[istr, str] | None = None) -> CIMultiDict[str]:
    """SECURITY_HEADERS, then ``extra``, then ``Content-Type`` (when given): the headers of a response."""
    headers = CIMultiDict(SECURITY_HEADERS)
    if extra:
        headers.extend(extra)
    if content_type is not None:
        headers[hdrs.CONTENT_TYPE] = content_type
    return headers


@functools.lru_cache(maxsize=256)
def _error_body(message: str) -> bytes:
    # Fixed texts only (a few dozen, some naming an assigned secret): encoded once each.
    return json.dumps({"error": message}).encode()


def error_response(status: int, message: str, headers: Mapping[istr, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``. ``message`` must be a fixed text, never request data."""
    return web.Response(body=_error_body(message), status=status, headers=headers_with(JSON, headers))


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as a JSON body, with the security headers."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers_with(JSON))


def status_message(status: int) -> str:
    """The fixed message of a status aiohttp produced (``request failed`` for one not listed)."""
    return STATUS_MESSAGES.get(status, "request failed")


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (body too large, and any other it raises in a handler) as our JSON bodies."""
    headers = {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
    return error_response(exc.status, status_message(exc.status), headers)
