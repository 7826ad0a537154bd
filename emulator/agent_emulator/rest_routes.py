"""Google's v1 REST URL templates for SecretManagerService, and matching request paths against them.

The templates are copied from the ``google.api.http`` annotations of the service (the official client's
``rest_base.py`` carries the same list; a test keeps the two in step). Methods the emulator does not serve
(IAM, managed rotation, locations) are routed too, so that they answer UNIMPLEMENTED, not "no such URL".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

API_PREFIX = "/v1/"

_TEMPLATE = re.compile(
    r"^/v1/\{(?P<field>[a-z_.]+)=(?P<pattern>[^}]+)\}(?P<tail>(?:/[A-Za-z]+)*)(?::(?P<verb>[A-Za-z]+))?$"
)


@dataclass(frozen=True)
class Route:
    """One ``google.api.http`` rule: HTTP method + URI template -> RPC, path variable and body field."""

    http_method: str
    """Upper-case HTTP method, e.g. ``GET``."""
    template: str
    """The URI template as Google writes it, e.g. ``/v1/{name=projects/*/secrets/*}``."""
    rpc: str
    """gRPC method name, the key of ``agent_emulator.methods.METHODS``."""
    body: str
    """``""`` (no body), ``"*"`` (the whole request) or the request field the body holds (``"secret"``)."""
    field: str
    """Request field bound to the path variable, dotted (``secret.name``)."""
    segments: tuple[str, ...]
    """Path segments after ``/v1/``: literals and ``*`` (exactly one non-empty segment)."""
    variable_length: int
    """How many leading segments form the path variable's value."""
    verb: str | None
    """Custom method after ``:`` (``access``), or None."""


def _route(http_method: str, template: str, rpc: str, body: str = "") -> Route:
    parsed = _TEMPLATE.match(template)
    if parsed is None:  # pragma: no cover - the table below is static
        raise ValueError(f"unsupported URI template {template}")
    variable = tuple(parsed["pattern"].split("/"))
    tail = tuple(parsed["tail"].split("/")[1:])
    return Route(
        http_method=http_method.upper(),
        template=template,
        rpc=rpc,
        body=body,
        field=parsed["field"],
        segments=variable + tail,
        variable_length=len(variable),
        verb=parsed["verb"],
    )


def _global_and_regional(http_method: str, template: str, rpc: str, body: str = "") -> tuple[Route, Route]:
    """Every secret route exists twice: ``projects/*/...`` and ``projects/*/locations/*/...``."""
    regional = template.replace("=projects/*", "=projects/*/locations/*", 1)
    return _route(http_method, template, rpc, body), _route(http_method, regional, rpc, body)


ROUTES: tuple[Route, ...] = (
    *_global_and_regional("GET", "/v1/{name=projects/*/secrets/*/versions/*}:access", "AccessSecretVersion"),
    *_global_and_regional("POST", "/v1/{parent=projects/*/secrets/*}:addVersion", "AddSecretVersion", "*"),
    *_global_and_regional("POST", "/v1/{parent=projects/*}/secrets", "CreateSecret", "secret"),
    *_global_and_regional("DELETE", "/v1/{name=projects/*/secrets/*}", "DeleteSecret"),
    *_global_and_regional(
        "POST", "/v1/{name=projects/*/secrets/*/versions/*}:destroy", "DestroySecretVersion", "*"
    ),
    *_global_and_regional(
        "POST", "/v1/{name=projects/*/secrets/*/versions/*}:disable", "DisableSecretVersion", "*"
    ),
    *_global_and_regional(
        "POST", "/v1/{name=projects/*/secrets/*/versions/*}:enable", "EnableSecretVersion", "*"
    ),
    *_global_and_regional("GET", "/v1/{name=projects/*/secrets/*}", "GetSecret"),
    *_global_and_regional("GET", "/v1/{name=projects/*/secrets/*/versions/*}", "GetSecretVersion"),
    *_global_and_regional("GET", "/v1/{parent=projects/*}/secrets", "ListSecrets"),
    *_global_and_regional("GET", "/v1/{parent=projects/*/secrets/*}/versions", "ListSecretVersions"),
    *_global_and_regional("PATCH", "/v1/{secret.name=projects/*/secrets/*}", "UpdateSecret", "secret"),
    # Served by the real API, not by the emulator: routed so that they answer 501 UNIMPLEMENTED.
    *_global_and_regional("GET", "/v1/{resource=projects/*/secrets/*}:getIamPolicy", "GetIamPolicy"),
    *_global_and_regional("POST", "/v1/{resource=projects/*/secrets/*}:setIamPolicy", "SetIamPolicy", "*"),
    *_global_and_regional(
        "POST", "/v1/{resource=projects/*/secrets/*}:testIamPermissions", "TestIamPermissions", "*"
    ),
    *_global_and_regional("POST", "/v1/{parent=projects/*/secrets/*}:rotateSecret", "RotateSecret", "*"),
    *_global_and_regional(
        "POST", "/v1/{parent=projects/*/secrets/*}:enableManagedRotation", "EnableManagedRotation", "*"
    ),
    _route("GET", "/v1/{name=projects/*/locations/*}", "GetLocation"),
    _route("GET", "/v1/{name=projects/*}/locations", "ListLocations"),
)


@dataclass(frozen=True)
class Match:
    """The request addresses ``route``; ``value`` is the decoded path variable (a resource name)."""

    route: Route
    value: str


@dataclass(frozen=True)
class WrongMethod:
    """The path is known but not for this HTTP method; ``allowed`` lists the methods that are."""

    allowed: tuple[str, ...]


@dataclass(frozen=True)
class UnknownVerb:
    """The path addresses a known kind of resource, with a custom method (``:verb``) nobody serves."""

    verb: str


Resolution = Match | WrongMethod | UnknownVerb | None
"""What ``resolve`` found; None means the URL is unknown (404)."""


def split_path(raw_path: str) -> tuple[list[str], str | None] | None:
    """Decoded path segments after ``/v1/`` and the custom verb, from the still-encoded request path.

    The verb is split off before decoding, because the official client percent-encodes path variables
    (``:`` becomes ``%3A``), so only a literal ``:`` in the last segment introduces a custom method.
    """
    if not raw_path.startswith(API_PREFIX):
        return None
    raw_segments = raw_path[len(API_PREFIX) :].split("/")
    verb: str | None = None
    head, colon, tail = raw_segments[-1].rpartition(":")
    if colon:
        if not tail or not head:
            return None
        raw_segments[-1] = head
        verb = unquote(tail)
    return [unquote(segment) for segment in raw_segments], verb


def _fits(pattern: tuple[str, ...], segments: list[str]) -> bool:
    if len(pattern) != len(segments):
        return False
    return all(
        segment and (want == "*" or want == segment) for want, segment in zip(pattern, segments, strict=True)
    )


def resolve(http_method: str, raw_path: str, routes: tuple[Route, ...] = ROUTES) -> Resolution:
    """Find the route a request addresses, or say why there is none (wrong method, unknown verb, 404)."""
    split = split_path(raw_path)
    if split is None:
        return None
    segments, verb = split
    same_shape = [route for route in routes if _fits(route.segments, segments)]
    same_verb = [route for route in same_shape if route.verb == verb]
    for route in same_verb:
        if route.http_method == http_method.upper():
            value = "/".join(segments[: route.variable_length])
            return Match(route, value)
    if same_verb:
        return WrongMethod(tuple(sorted({route.http_method for route in same_verb})))
    if same_shape and verb is not None:
        return UnknownVerb(verb)
    return None
