"""The endpoint's URL space: one constant per route, and the ``route`` label a request is counted under.

The templates are also the metric labels and what the middlewares decide by (the route that needs no token,
the route that is audited), so they sit below both the middlewares and the handlers, apart from
``application.py`` which registers them. ``agent/endpoint/openapi.json`` documents each route.
"""

from __future__ import annotations

from aiohttp import web

ROUTE_SECRET = "/v1/secrets/{name}"  # noqa: S105 - a route, not a password
ROUTE_SECRETS = "/v1/secrets"
ROUTE_EVENTS = "/v1/events"
ROUTE_REFRESH = "/v1/refresh"
ROUTE_OPENAPI = "/openapi.json"
ROUTE_UNMATCHED = "unmatched"
"""The ``route`` metric label of requests that match no route (or are not even valid HTTP)."""


def route_of(request: web.Request) -> str:
    """The route template ``request`` matched, or ROUTE_UNMATCHED: never the path itself, which is the
    client's free text (a metric label must not carry it)."""
    resource = request.match_info.route.resource
    return ROUTE_UNMATCHED if resource is None else resource.canonical
