"""Serve an aiohttp application on one address until cancelled: the probes listener and the webhook.

(The local endpoint has its own connection handling, ``agent.endpoint``.)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)


async def serve_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    routes: str,
    shutdown_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    started: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled, then stop within ``shutdown_timeout`` seconds.

    The log line says ``<name> listening on [https://]HOST:PORT (<routes>)``; ``started(port)`` gets the
    bound port (useful with port 0). No access log: health checks and scrapes every few seconds would drown
    the real logs, and a request line can carry what must not be logged."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = int(runner.addresses[0][1])
        scheme = "https://" if ssl_context is not None else ""
        log.info("%s listening on %s%s:%d (%s)", name, scheme, host, bound, routes)
        if started is not None:
            started(bound)
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()
