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
RAW_PROXY_HEADERS = {name.encode("ascii"): shown for name, shown in PROXY_HEADERS.items()}
"""PROXY_HEADERS by the bytes of a lower-cased raw header name (the gate reads ``request.raw_headers``)."""
RAW_PROXY_PREFIXES = tuple(prefix.encode("ascii") for prefix in PROXY_PREFIXES)


def proxy_family(lower_name: bytes) -> str | None:
    """How the refusal names the proxy header ``lower_name`` (a lower-cased raw header name), None when it
    is not one: our spelling, never the client's."""
    known = RAW_PROXY_HEADERS.get(lower_name)
    if known is not None:
        return known
    for prefix, family in PROXY_PREFIXES.items():
        if lower_name.startswith(prefix.encode("ascii")):
            return family
    return None


def endpoint_hosts(allowed: Iterable[str] = ()) -> HostPolicy:
    """The ``Host`` values the endpoint answers: loopback, plus ``allowed`` (``server.allowed_hosts``);
    a request without ``Host`` is refused (HTTP/1.1 requires it, every client sends it)."""
    return HostPolicy.of(allowed, addresses="loopback", missing=False)
