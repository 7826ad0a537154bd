"""The endpoint's URL space: one constant per route, and the ``route`` label a request is counted under.

The templates are also the metric labels and what the middlewares decide by (the route that needs no token,
the route that is audited), so they sit below both the middlewares and the handlers, apart from
``application.py`` which registers them. ``agent/endpoint/openapi.json`` documents each route.
"""

from __future__ import annotations

from aiohttp import web

ROUTE_SECRET = "/v1/secrets/{name}"  # noqa: S105 - a route, not a password
ROUTE_SECRETS = "/v1/secrets"
ROUTE_FILE = "/v1/files/{path}"
"""A rendered file by its path inside ``output_dir``: the template requests are counted and audited under."""
ROUTE_FILE_PATTERN = "/v1/files/{path:.+}"
"""How ROUTE_FILE is registered: a path has slashes (``db/password``). aiohttp's canonical form of this
pattern is ROUTE_FILE, so the metric label never carries the path."""
ROUTE_EVENTS = "/v1/events"
ROUTE_REFRESH = "/v1/refresh"
ROUTE_OPENAPI = "/openapi.json"
ROUTE_UNMATCHED = "unmatched"
"""The ``route`` metric label of requests that match no route (or are not even valid HTTP)."""
AUDITED = frozenset({ROUTE_SECRET, ROUTE_FILE})
"""The routes whose requests are reads of a value, each one written to the audit log."""


def route_of(request: web.Request) -> str:
    """The route template ``request`` matched, or ROUTE_UNMATCHED: never the path itself, which is the
    client's free text (a metric label must not carry it)."""
    resource = request.match_info.route.resource
    return ROUTE_UNMATCHED if resource is None else resource.canonical
