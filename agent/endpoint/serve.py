"""Listening: serve the endpoint's application on one address until cancelled, then stop cleanly.

Apart from ``application.py`` because listening is where the endpoint meets every local process: the
address check, the connection cap, the limits and timeouts of ``protocol.py``, a clear error for an address
in use, and a shutdown that ends long-polls and event streams instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from agent.config import is_loopback
from agent.endpoint.limits import ConnectionLimiter
from agent.endpoint.protocol import connection_factory
from agent.endpoint.state import STATE
from agent.errors import AgentError

log = logging.getLogger("agent.endpoint.serve")

IDLE_TIMEOUT = 15.0
"""Seconds a connection may sit without a complete request (before the first, or between two)."""
SHUTDOWN_GRACE = 2.0
"""Seconds in-flight requests get to finish when the endpoint stops; long-polls and streams end at once."""
LISTEN_BACKLOG = 512


async def serve_endpoint(
    app: web.Application,
    host: str,
    port: int,
    *,
    max_connections: int,
    started: Callable[[int], None] | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    """Serve ``app`` (from ``build_endpoint_app``) on ``host:port`` until cancelled, then stop cleanly
    (streams and long-polls end).

    ``started`` gets the bound port (useful with port 0). At most ``max_connections`` connections are
    open at once (see ConnectionLimiter); a connection without a complete request for ``idle_timeout``
    seconds is closed."""
    if not is_loopback(host):
        log.warning(
            "the local endpoint listens on %s, which is not a loopback address: anything that can reach "
            "it can try the token (server.allow_remote)",
            host,
        )
    runner = web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    manager = runner.server
    assert manager is not None
    state = app[STATE]
    limiter = state.connections = ConnectionLimiter(max_connections)
    connection = connection_factory(manager, limiter, state.metrics, idle_timeout=idle_timeout)
    loop = asyncio.get_running_loop()
    server: asyncio.Server | None = None
    try:
        try:
            server = await loop.create_server(
                connection, host, port, backlog=LISTEN_BACKLOG, reuse_address=True
            )
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise AgentError(
                f"the local endpoint cannot listen on {host}:{port} (server.listen): {reason}"
            ) from None
        bound = server.sockets[0].getsockname()[1]
        log.info("local endpoint listening on http://%s:%d", host if ":" not in host else f"[{host}]", bound)
        if started is not None:
            started(bound)
        await asyncio.Event().wait()
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()
        state.connections = None
