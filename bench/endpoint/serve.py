"""The server processes (``python -m bench.endpoint serve``): the agent's endpoint as ``run`` wires it, or
the bare aiohttp handler that is the baseline; each announces its port on stdout and serves until SIGTERM.

The agent's server also runs a control listener, the benchmark's hands inside the process (how many
requests wait in the handler; publish a rotated snapshot and say when), for the long-poll measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.endpoint.settings import NAME, SECRETS, STARTUP_TIMEOUT, announce, value_of


async def serve(kind: str, audit: bool, token: str, max_connections: int, count_requests: bool) -> None:
    from aiohttp import web

    if kind == "bare":
        body = value_of(0, 1)

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/octet-stream")

        bare = web.Application()
        bare.router.add_get("/v1/secrets/{name}", handler)
        runner = web.AppRunner(bare, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        announce({"port": runner.addresses[0][1]})
        await asyncio.Event().wait()
        return

    # Imported here: the bare server must not pay for (or be slowed by) anything of the agent's.
    from agent.config import ServerConfig, load_config
    from agent.core.model import Fetched, Snapshot, crc32c
    from agent.core.store import SnapshotStore
    from agent.endpoint.application import build_endpoint_app
    from agent.endpoint.handlers import etag_of
    from agent.endpoint.serve import serve_endpoint
    from agent.observe.logs import configure_logging, register_served_values
    from agent.observe.metrics import Metrics

    configure_logging("info", "json")  # as `run` does: JSON lines to stderr, redaction on
    names = [f"bench-{i:03d}" for i in range(SECRETS)]
    config = load_config(None, {}, {"project": "bench-project", "secrets": [f"{n}={n}" for n in names]})
    store = SnapshotStore(config.secrets)
    items = [Fetched(n, "1", value_of(i, 1), crc32c(value_of(i, 1))) for i, n in enumerate(names)]
    first = Snapshot({item.name: item for item in items})
    register_served_values(item.data for item in first)  # what `run` does with every snapshot it serves
    await store.publish(first)
    metrics = Metrics(store=store, max_staleness=config.max_staleness)
    app = build_endpoint_app(
        store=store,
        token=token,
        refresh=lambda: None,
        audit=audit,
        max_wait=ServerConfig().max_wait,
        metrics=metrics,
    )
    # Innermost middleware: a handler runs from here to its first suspension point, the long-poll's wait,
    # without yielding, so once the control listener sees N in flight, N requests are waiting.
    in_flight = 0

    @web.middleware
    async def count_in_flight(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal in_flight
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    if count_requests:  # only for the watcher run: it costs the throughput run a little
        app.middlewares.append(count_in_flight)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    endpoint = asyncio.create_task(
        serve_endpoint(app, "127.0.0.1", 0, max_connections=max_connections, started=bound.set_result)
    )
    port = await asyncio.wait_for(asyncio.shield(bound), STARTUP_TIMEOUT)

    # The control listener: the benchmark's hands inside the server process (not part of the endpoint).
    async def waiting(request: web.Request) -> web.Response:
        return web.json_response({"waiting": in_flight})

    async def publish(request: web.Request) -> web.Response:
        current = store.snapshot.get(NAME)
        assert current is not None
        version = int(current.version) + 1
        data = value_of(0, version)
        rotated = Fetched(NAME, str(version), data, crc32c(data))
        snapshot = store.snapshot.with_updates([rotated])
        register_served_values(item.data for item in snapshot)
        published_at = time.monotonic()
        await store.publish(snapshot)
        return web.json_response({"published_at": published_at, "etag": etag_of(rotated)})

    control = web.Application()
    control.router.add_get("/waiting", waiting)
    control.router.add_post("/publish", publish)
    runner = web.AppRunner(control, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    current = store.snapshot.get(NAME)
    assert current is not None
    announce({"port": port, "control": runner.addresses[0][1], "etag": etag_of(current)})
    await endpoint
