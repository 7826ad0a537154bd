"""Who may talk to the endpoint at all, decided before the token: the ``Host`` it was addressed by and the
proxy headers it must not carry. (How many connections it holds, and for how long: ``agent.core.serving``,
configured by ``serve.py``.)

* ``Host``: loopback only (``127.0.0.1``, any ``127.x`` or ``[::1]`` literal, ``localhost``, any port) plus
  the names configured (``server.allowed_hosts``). A page in a developer's browser that rebinds its own DNS
  name to 127.0.0.1 sends that name: refused, so it cannot read even ``/openapi.json``.
* Proxy headers: the endpoint is for processes in the pod. A request relayed by a proxy, a mesh sidecar or
  a CDN carries whatever headers the proxy's client chose, and its real client is not in the pod: every
  header a proxy adds to say so is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDictProxy

from agent.core.serving.hosts import HostPolicy

_PROXY_HEADERS = (
    "Forwarded",
    "Via",
    "X-Real-IP",
    "X-Client-IP",
    "Client-IP",
    "True-Client-IP",
    "CF-Connecting-IP",
    "CF-Connecting-IPv6",
    "Fastly-Client-IP",
    "Akamai-Client-IP",
    "X-Cluster-Client-IP",
    "X-Original-Forwarded-For",
    "X-Originating-IP",
    "X-Remote-IP",
    "X-Remote-Addr",
    "X-ProxyUser-IP",
    "X-Host",
    "X-Original-Host",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Appengine-User-IP",
)
PROXY_HEADERS = {name.lower(): name for name in _PROXY_HEADERS}
"""Headers a proxy adds about the client it relays: lower case -> how the refusal names it."""
PROXY_PREFIXES = {"x-forwarded-": "X-Forwarded-*", "x-envoy-": "X-Envoy-*"}
"""Header families a proxy adds (``X-Forwarded-For/-Host/-Proto/-Port``, Envoy's ``X-Envoy-...``): prefix ->
how the refusal names the family (never the name the client sent)."""
_PREFIXES = tuple(PROXY_PREFIXES)


def proxy_header(headers: CIMultiDictProxy[str]) -> str | None:
    """How to name the first proxy header in ``headers`` (None: none): our spelling, never the client's."""
    for name in headers:
        lower = name.lower()
        known = PROXY_HEADERS.get(lower)
        if known is not None:
            return known
        if lower.startswith(_PREFIXES):
            return next(family for prefix, family in PROXY_PREFIXES.items() if lower.startswith(prefix))
    return None


def endpoint_hosts(allowed: Iterable[str] = ()) -> HostPolicy:
    """The ``Host`` values the endpoint answers: loopback, plus ``allowed`` (``server.allowed_hosts``);
    a request without ``Host`` is refused (HTTP/1.1 requires it, every client sends it)."""
    return HostPolicy.of(allowed, addresses="loopback", missing=False)
