"""The endpoint's URL space: one constant per route, and the ``route`` label a request is counted under.

The templates are also the metric labels (never the path itself, which is the client's free text), so they
sit below both the middlewares and the handlers, apart from ``application.py`` which registers them.
``agent/endpoint/openapi.json`` documents each route.
"""

from __future__ import annotations

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
ROUTE_ANY = "/{unmatched}"
"""The catch-all route, which answers every request no other route matches (404, or 405 for a path with
other methods): the canonical form of ROUTE_ANY_PATTERN. Its requests are counted as ROUTE_UNMATCHED."""
ROUTE_ANY_PATTERN = "/{unmatched:.*}"
