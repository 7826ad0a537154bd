"""What every error the endpoint sends looks like, and the headers every response carries.

An error is ``{"error": "<fixed message>"}``. It has a module of its own because three layers answer with
errors (the middlewares, the handlers, and the connection plumbing that answers requests aiohttp could not
even parse) and all of them must build them the same way, and never from request data: the request line, a
header or an exception's text can carry the token or a value.
"""

from __future__ import annotations

from aiohttp import web

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

SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""On every response: nothing the endpoint returns may be cached or content-sniffed on the way."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``. ``message`` must be a fixed text, never request data."""
    return web.json_response({"error": message}, status=status, headers=headers)


def status_message(status: int) -> str:
    """The fixed message of a status aiohttp produced (``request failed`` for one not listed)."""
    return STATUS_MESSAGES.get(status, "request failed")


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (no route, wrong method, body too large) as our JSON error bodies."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, status_message(exc.status), headers)
