"""Serving an aiohttp application on one address, with the same defences on every listener (the local
endpoint, the probes, the webhook): a connection cap that evicts idle connections first, an idle and header
timeout, bounded request lines and headers, a ``Host`` check, and logs that cannot flood.

``listen`` binds and accepts; ``connection`` is the per-connection plumbing between asyncio and aiohttp;
``limits`` counts connections and bursts; ``hosts`` decides which ``Host`` values are answered.
"""

from __future__ import annotations

from agent.core.serving.connection import request_started
from agent.core.serving.hosts import HostPolicy
from agent.core.serving.limits import BurstLog, ConnectionLimiter
from agent.core.serving.listen import serve_site

__all__ = ["BurstLog", "ConnectionLimiter", "HostPolicy", "request_started", "serve_site"]
