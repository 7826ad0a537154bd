"""Listening: serve the endpoint's application on one address until cancelled, then stop cleanly.

Apart from ``application.py`` because listening is where the endpoint meets every local process: the
address check, and ``agent.core.serving`` (shared by every listener) for the connection cap, the limits and
timeouts, a clear error for an address in use, and a shutdown that ends long-polls and event streams instead
of waiting for them. The endpoint's safety-net middleware marks requests busy and checks ``Host`` itself
(one middleware layer less on every request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from agent.config import is_loopback
from agent.core.serving import serve_site
from agent.endpoint.protocol import aiohttp_log, count_malformed
from agent.endpoint.responses import status_message
from agent.endpoint.state import STATE

log = logging.getLogger("agent.endpoint.serve")

IDLE_TIMEOUT = 15.0
"""Seconds a connection may sit without a complete request (before the first, or between two)."""
SHUTDOWN_GRACE = 2.0
"""Seconds in-flight requests get to finish when the endpoint stops; long-polls and streams end at once."""


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
    await serve_site(
        app,
        host,
        port,
        name="local endpoint",
        max_connections=max_connections,
        max_connections_setting="server.max_connections",
        idle_timeout=idle_timeout,
        shutdown_timeout=SHUTDOWN_GRACE,
        app_marks_requests=True,
        handler_cancellation=True,
        on_malformed=count_malformed(app[STATE].metrics),
        error_text=status_message,
        logger_name=aiohttp_log.name,
        scheme="http://",
        started=started,
        cannot_listen=(
            "the local endpoint",
            "set server.listen (--listen, SECRETS_AGENT_SERVER_LISTEN) to a free address",
        ),
    )
