"""The endpoint's part of the per-connection plumbing (``agent.core.serving.connection`` is the rest, shared
by every listener): requests aiohttp cannot parse are counted in the endpoint's metrics under the
``unmatched`` route and answered with the endpoint's fixed messages, and aiohttp's own log lines go to
``agent.endpoint.aiohttp`` with exception texts dropped (they can quote the raw request, token included).
"""

from __future__ import annotations

from agent.core.serving.connection import OnMalformed, quiet_logger
from agent.endpoint.routes import ROUTE_UNMATCHED
from agent.observe.metrics import Metrics

aiohttp_log = quiet_logger("agent.endpoint.aiohttp")
"""The logger of aiohttp's connection handler (its ``logger`` option), with exception texts dropped."""


def count_malformed(metrics: Metrics | None) -> OnMalformed | None:
    """What to do with the status of a request aiohttp could not parse: count it (no metrics: nothing)."""
    if metrics is None:
        return None
    counted = metrics

    def count(status: int) -> None:
        counted.request(ROUTE_UNMATCHED, status)

    return count
