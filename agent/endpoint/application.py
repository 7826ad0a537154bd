"""The local endpoint's aiohttp application: apps in the pod ask for their secrets over HTTP on loopback.

This module only assembles it (state, routes, each route's handler behind the guard, hooks); each part
explains itself: ``handlers.py`` (what each route answers, from memory only), ``middlewares.py`` (JSON
errors, the ``Host`` check and the proxy-header refusal of ``limits.py``, the token, the accounting),
``audit.py`` (the audit log of reads), and, for serving it, ``serve.py`` with ``protocol.py`` over
``agent.core.serving`` (request size limits, idle timeout, connection cap).

Routes (``agent/endpoint/openapi.json`` is the reference, served at ``/openapi.json`` without a token):
``GET /v1/secrets/{name}`` (raw bytes, or ``?format=json``; ETag, If-None-Match, long-poll ``?wait=``),
``GET /v1/files/{path}`` (any rendered file by its path inside ``output_dir``: a key's, a template's; the
same headers, 304 and long-poll), ``GET /v1/secrets`` (names and versions), ``GET /v1/events``
(Server-Sent Events on rotation), ``POST /v1/refresh`` (check the backend now).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Collection, Iterable

from aiohttp import web

from agent.config import written_files
from agent.core.store import SnapshotStore
from agent.endpoint.handlers import Handlers
from agent.endpoint.limits import endpoint_hosts
from agent.endpoint.middlewares import Guard
from agent.endpoint.routes import (
    ROUTE_ANY_PATTERN,
    ROUTE_EVENTS,
    ROUTE_FILE,
    ROUTE_FILE_PATTERN,
    ROUTE_OPENAPI,
    ROUTE_REFRESH,
    ROUTE_SECRET,
    ROUTE_SECRETS,
    ROUTE_UNMATCHED,
)
from agent.endpoint.state import STATE, EndpointState
from agent.observe.metrics import Metrics

MAX_BODY_BYTES = 1024
"""Largest request body accepted; only ``POST /v1/refresh`` takes one, and ignores it."""
SSE_PING_INTERVAL = 15.0
"""Seconds between keep-alive comments on an idle event stream (proxies and clients drop silent ones)."""


def load_openapi() -> bytes:
    """The OpenAPI 3 document of this endpoint (``agent/endpoint/openapi.json``, package data)."""
    return importlib.resources.files("agent.endpoint").joinpath("openapi.json").read_bytes()


def build_endpoint_app(
    *,
    store: SnapshotStore,
    token: str,
    refresh: Callable[[], float | None],
    audit: bool,
    max_wait: float,
    metrics: Metrics | None = None,
    ping_interval: float = SSE_PING_INTERVAL,
    allowed_hosts: Iterable[str] = (),
    files: Iterable[str] | Callable[[], Collection[str]] | None = None,
) -> web.Application:
    """The endpoint's aiohttp application; serve it with ``serve_endpoint`` (which adds the connection
    limits). ``refresh`` asks the sync loop to check the backend now (None: queued; a number: too soon,
    retry after that many seconds); ``max_wait`` caps ``?wait=``; ``allowed_hosts`` are the ``Host`` names
    answered besides loopback (``server.allowed_hosts``).

    ``files`` are the paths inside ``output_dir`` of every file the configuration renders (the renderer's
    plans): known up front, so that ``/v1/files/{path}`` can tell a file whose secrets are not fetched yet
    (503, retry) from a path that will never exist (404). A callable is asked at each such lookup (the set
    of secrets changes while the agent runs when ``select`` chooses them). None: the files of the store's
    secrets and of their ``keys``; templates' files are then answered once rendered, and 404 before."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    state = app[STATE] = EndpointState(
        store=store,
        token=token,
        refresh=refresh,
        audit=audit,
        max_wait=max_wait,
        metrics=metrics,
        ping_interval=ping_interval,
        openapi=load_openapi(),
        hosts=endpoint_hosts(allowed_hosts),
        files=files
        if callable(files)
        else _fixed(written_files(tuple(store.specs.values())) if files is None else files),
    )
    serve, guard = Handlers(state), Guard(state)
    # No aiohttp middleware and no response hook: each would cost every request more than the gate itself
    # (see middlewares.py). ROUTE_SECRET goes before ROUTE_SECRETS: aiohttp tries the two in that order for
    # a path under /v1/secrets/, and the read is the request that comes a thousand times a minute.
    routes = app.router
    routes.add_get(
        ROUTE_SECRET,
        guard.read(ROUTE_SECRET, "name", store.specs.__contains__, serve.get_secret, serve.answer_secret),
        allow_head=False,
    )
    routes.add_get(ROUTE_SECRETS, guard.route(ROUTE_SECRETS, serve.list_secrets), allow_head=False)
    routes.add_get(
        ROUTE_FILE_PATTERN,
        guard.read(ROUTE_FILE, "path", state.known_file, serve.get_file, serve.answer_file),
        allow_head=False,
    )
    routes.add_get(ROUTE_EVENTS, guard.route(ROUTE_EVENTS, serve.events), allow_head=False)
    routes.add_post(ROUTE_REFRESH, guard.route(ROUTE_REFRESH, serve.refresh))
    routes.add_get(
        ROUTE_OPENAPI, guard.route(ROUTE_OPENAPI, serve.openapi, needs_token=False), allow_head=False
    )
    # Last, and tried last (aiohttp tries the longest prefixes first): everything else, 404 or 405.
    routes.add_route("*", ROUTE_ANY_PATTERN, guard.route(ROUTE_UNMATCHED, guard.unmatched))
    app.on_shutdown.append(_on_shutdown)
    return app


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].stop()
    app[STATE].audit_trail.flush()


def _fixed(files: Iterable[str]) -> Callable[[], Collection[str]]:
    known = frozenset(files)
    return lambda: known
