"""The probes listener: ``/healthz``, ``/readyz`` and ``/metrics`` for the kubelet and Prometheus.

It serves no secret data and needs no token (the kubelet and Prometheus cannot send one), so nothing it
answers may hold a value: readiness reasons and liveness problems name secrets and loops only, and metric
labels are local names, codes and route templates (see ``agent.observe.metrics``).

* ``GET /healthz``: 200 ``{"status": "ok"}`` while every loop beats (``Liveness.problems``); else 503 with
  ``{"status": "unhealthy", "problems": [...]}``. The kubelet restarts a sidecar whose loop is stuck.
* ``GET /readyz``: 200 ``{"status": "ready"}`` once every required secret was fetched and none is older
  than ``max_staleness``; else 503 with ``{"status": "not ready", "reasons": [...]}``.
* ``GET /metrics``: the registry in the Prometheus text format (0.0.4), or OpenMetrics when the scraper's
  ``Accept`` asks for ``application/openmetrics-text``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest

from agent.core.serving import HostPolicy, serve_site

log = logging.getLogger(__name__)

Problems = Callable[[], list[str]]
"""Returns what is wrong (empty: all good); every line is safe to show anyone."""

_NO_STORE = {"Cache-Control": "no-store"}

MAX_CONNECTIONS = 32
"""Most connections open at once (``probes.max_connections``): the kubelet opens one per probe, Prometheus
keeps one or two; a flood beyond this evicts its own idle sockets instead of taking file descriptors."""
IDLE_TIMEOUT = 15.0
"""Seconds a connection may sit without a complete request (a half-sent header is idle too)."""
REQUEST_TIMEOUT = 10.0
"""Seconds one request may take, body included (408 after)."""
HOST_REFUSED = "the Host header must be an IP address, localhost or a name in probes.allowed_hosts"
"""The body of a 421: the ``Host`` value itself is never echoed."""


def build_probes_app(*, registry: CollectorRegistry, ready: Problems, alive: Problems) -> web.Application:
    """The probes application: ``ready`` gives the not-ready reasons (e.g. ``store.not_ready_reasons``
    bound to ``max_staleness``), ``alive`` the stuck loops (e.g. ``Liveness.problems``)."""

    async def healthz(request: web.Request) -> web.StreamResponse:
        problems = alive()
        if problems:
            return web.json_response(
                {"status": "unhealthy", "problems": problems}, status=503, headers=_NO_STORE
            )
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def readyz(request: web.Request) -> web.StreamResponse:
        reasons = ready()
        if reasons:
            return web.json_response(
                {"status": "not ready", "reasons": reasons}, status=503, headers=_NO_STORE
            )
        return web.json_response({"status": "ready"}, headers=_NO_STORE)

    async def metrics(request: web.Request) -> web.StreamResponse:
        encoder, content_type = _encoder_for(request.headers.get("Accept", ""))
        # Generated in the event loop's thread on purpose: the store collector reads the SnapshotStore,
        # which only this thread touches; a scrape of a few kB takes well under a millisecond.
        body = encoder(registry)
        return web.Response(body=body, headers={"Content-Type": content_type, **_NO_STORE})

    # No request has a body here; refuse anything bigger than a small form outright.
    app = web.Application(client_max_size=1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _encoder_for(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """OpenMetrics when the scraper asks for it (prometheus_client's negotiation), else text 0.0.4."""
    try:
        return choose_encoder(accept)
    except Exception:  # a malformed Accept header (e.g. a bad version) gets the classic format, not a 500
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4


async def serve_probes(
    app: web.Application,
    host: str,
    port: int,
    *,
    started: Callable[[int], None] | None = None,
    max_connections: int = MAX_CONNECTIONS,
    allowed_hosts: Iterable[str] = (),
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``started(port)`` gets the bound port (for port 0).

    The listener has the defences of every listener (``agent.core.serving``): at most ``max_connections``
    connections (the idle ones evicted first), closed after ``idle_timeout`` seconds without a complete
    request, each request answered within ``request_timeout`` seconds (else 408). ``Host`` must be an IP
    address (the kubelet and Prometheus come by pod IP), ``localhost`` or one of ``allowed_hosts``: any
    other DNS name is refused with 421 (DNS rebinding from a browser); a request without ``Host`` is
    answered.

    Raises AgentError, naming the setting, when it cannot listen there (e.g. the port is taken)."""
    hosts = HostPolicy.of(allowed_hosts, addresses="any", missing=True)
    await serve_site(
        app,
        host,
        port,
        name="probes",
        routes="/healthz, /readyz, /metrics",
        max_connections=max_connections,
        max_connections_setting="probes.max_connections",
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
        hosts=hosts,
        host_error=HOST_REFUSED,
        shutdown_timeout=1.0,
        logger_name="agent.observe.probes.aiohttp",
        started=started,
        cannot_listen=(
            "the probes listener",
            "set probes.listen (--probes-listen, SECRETS_AGENT_PROBES_LISTEN) to a free address, or "
            "probes.enabled: false",
        ),
    )
