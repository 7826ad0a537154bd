"""Who may talk to the emulator's HTTP port: local programs, never a web page.

The emulator has no authentication and usually runs on a developer's laptop, where any web page the
developer opens can make the browser send requests to ``127.0.0.1``. Two such attacks, and what stops them:

- **Cross-site requests (CSRF).** A page can send, without asking the server first, only a browser's
  "simple" request: GET/HEAD/POST with no Content-Type or ``text/plain``,
  ``application/x-www-form-urlencoded`` or ``multipart/form-data``. Anything else (``application/json``,
  PUT, PATCH, DELETE) needs a CORS preflight, which the emulator never approves. So every state-changing
  request must say ``Content-Type: application/json`` (a DELETE without a body may say nothing); and any
  request whose ``Origin`` is not a loopback page, or that a browser marks ``Sec-Fetch-Site: cross-site``
  without an Origin, is refused whatever its method.
- **DNS rebinding.** A page on ``evil.example`` whose name is made to resolve to 127.0.0.1 is same-origin
  with the emulator as far as the browser knows, and could read answers. Its requests carry
  ``Host: evil.example``: only loopback names and addresses are answered (``127.0.0.1``, ``localhost``,
  ``[::1]``, any port), plus the ``--host`` the emulator was started with when that is not loopback (and
  any IP address when it binds a wildcard such as 0.0.0.0, since an address literal cannot be rebound).

One exception to the JSON rule: ``POST /v1/token`` (the STS token exchange) also takes
``application/x-www-form-urlencoded``, because that is what google-auth sends (RFC 8693). A page's form post
to it still carries an ``Origin`` (refused above), and what it could do is exchange a subject token it
already holds for an access token it cannot read (no CORS).

The official clients (google-cloud-secret-manager over REST, gcloud, curl with
``-H 'Content-Type: application/json'``, google-auth's STS and IAM Credentials calls) pass all three
checks. gRPC is not affected: browsers cannot
speak it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import grpc
from aiohttp import web
from aiohttp.typedefs import Middleware

from agent_emulator import admin, rest
from agent_emulator.rest_codec import RestInputError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Host names answered whatever the emulator binds to (any loopback IP literal is answered too)."""

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names of wildcard binds, not a bind
"""Bind addresses meaning "every interface"."""

_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON = "application/json"


def host_name(value: str) -> str | None:
    """The name or address of a ``Host`` (or Origin authority) value, without port or brackets,
    lower-cased; None when it is not a well-formed ``host[:port]``."""
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not _is_port_suffix(text[end + 1 :])):
            return None
        return text[1:end]
    name, colon, port = text.rpartition(":")
    if not colon:
        return text.rstrip(".") or None
    if ":" in name or not _is_port_suffix(f":{port}"):
        return None
    return name.rstrip(".") or None


def _is_port_suffix(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostPolicy:
    """Which ``Host`` names this emulator answers (see the module docstring)."""

    def __init__(self, bind_host: str) -> None:
        self._bind = bind_host.strip().strip("[]").lower()
        self._any_address = self._bind in WILDCARD_HOSTS

    def allows(self, name: str) -> bool:
        """True for a loopback name or address, the configured ``--host``, or (wildcard bind) any address."""
        if name in LOOPBACK_NAMES or name == self._bind:
            return True
        address = _ip(name)
        return address is not None and (address.is_loopback or self._any_address)


def _refusal(request: web.Request, status: int, code: grpc.StatusCode, message: str) -> web.Response:
    if request.rel_url.path.startswith(rest.ADMIN_PREFIX):
        return web.json_response(admin.error_body(status, message), status=status)
    return rest.error_response(RestInputError(code, message, http_status=status))


def check(request: web.Request, policy: HostPolicy) -> tuple[int, grpc.StatusCode, str] | None:
    """Why ``request`` is refused (HTTP status, gRPC code, message), or None when it may be served.

    The messages quote no header value: they are attacker-chosen and could be long.
    """
    host = request.headers.get("Host")
    if host is not None:
        name = host_name(host)
        if name is None or not policy.allows(name):
            return (
                403,
                grpc.StatusCode.PERMISSION_DENIED,
                "The Host header names neither loopback (127.0.0.1, localhost, [::1]) nor the address the "
                "emulator was started with (--host); requests through other names are refused, so that a "
                "web page cannot reach the emulator by DNS rebinding.",
            )
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        origin_host = host_name(parts.netloc) if parts.scheme in ("http", "https") else None
        if origin_host is None or not policy.allows(origin_host):
            return (
                403,
                grpc.StatusCode.PERMISSION_DENIED,
                "Cross-origin requests are refused: this request comes from a web page that is not served "
                "from loopback, and the emulator has no authentication.",
            )
    elif request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
        return (
            403,
            grpc.StatusCode.PERMISSION_DENIED,
            "Cross-site requests are refused: a web page sent this request, and the emulator has no "
            "authentication.",
        )
    if request.method in _STATE_CHANGING and not _declares_json(request):
        return (
            415,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{request.method} requests must carry 'Content-Type: application/json' (with curl: "
            "-H 'Content-Type: application/json'); other content types are refused so that a web page "
            "cannot change the emulator with a form or text/plain post.",
        )
    return None


FORM_PATHS = frozenset({"/v1/token"})
"""Paths that may take ``application/x-www-form-urlencoded`` POSTs (OAuth token endpoints)."""
_FORM = "application/x-www-form-urlencoded"


def _declares_json(request: web.Request) -> bool:
    if request.method == "POST" and request.rel_url.path in FORM_PATHS and request.content_type == _FORM:
        return True
    if "Content-Type" not in request.headers:
        # Only a DELETE without a body may omit it: a browser never sends DELETE cross-origin unasked.
        return request.method == "DELETE" and not request.body_exists
    return request.content_type == _JSON


def middleware(bind_host: str) -> Middleware:
    """An aiohttp middleware applying :func:`check` to every request of the HTTP port."""
    policy = HostPolicy(bind_host)

    @web.middleware
    async def local_clients_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = check(request, policy)
        if refused is not None:
            return _refusal(request, *refused)
        return await handler(request)

    return local_clients_only
