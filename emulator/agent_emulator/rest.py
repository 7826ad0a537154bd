"""Google's v1 REST/JSON API for Secret Manager, over the same dispatcher (and store) as gRPC.

A request is routed by its URI template (``rest_routes``), turned into the proto-plus request the gRPC
adapter would have received (path variable + query parameters + JSON body, ``rest_codec``), run through
``Dispatcher.call``, and answered with the response as JSON - or with an error as Google sends it::

    {"error": {"code": 404, "message": "Secret [projects/p/secrets/s] not found ...", "status": "NOT_FOUND"}}

so that the official client's ``transport="rest"`` raises the same google.api_core exceptions it would
against the real service. The caller's ``Authorization`` and ``X-Goog-User-Project`` headers go to the
dispatcher (identity checks, when the identity config requires them); a 401 carries
``WWW-Authenticate: Bearer``, and errors with a ``google.rpc.ErrorInfo`` carry it in ``details``.
The identity endpoints (``/v1/token``, ``/v1/projects/-/serviceAccounts/...``) are routed by
:mod:`agent_emulator.identity_http`, ahead of these.

Bad input is always a 4xx; a 500 only ever comes from an injected INTERNAL fault
or a bug, and then says nothing about the request.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from agent_emulator import bounded, rest_codec, rest_routes
from agent_emulator.dispatch import Caller, Dispatcher
from agent_emulator.errors import EmulatorError, ErrorInfo
from agent_emulator.methods import METHODS
from agent_emulator.rest_codec import RestInputError

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/emulator/"
"""Paths under here belong to the admin API, which renders its own errors."""

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
"""google.rpc.Code -> HTTP status, as Google's front end maps them (google/rpc/code.proto)."""

_JSON = "application/json"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(
    http_status: int,
    code: grpc.StatusCode,
    message: str,
    field: str | None = None,
    info: ErrorInfo | None = None,
) -> bytes:
    """Google's JSON error document (``error.code``/``message``/``status``, plus a BadRequest or an
    ErrorInfo detail)."""
    error: dict[str, Any] = {"code": http_status, "message": message, "status": code.name}
    details: list[dict[str, Any]] = []
    if field is not None:
        details.append(
            {"@type": _BAD_REQUEST_TYPE, "fieldViolations": [{"field": field, "description": message}]}
        )
    if info is not None:
        details.append(info.to_json())
    if details:
        error["details"] = details
    return rest_codec.dump({"error": error})


def error_response(error: EmulatorError) -> web.Response:
    """The HTTP response for an EmulatorError (from the store, faults or the REST layer itself)."""
    headers = {"Allow": ", ".join(error.allowed)} if isinstance(error, _MethodNotAllowed) else {}
    field = error.field if isinstance(error, RestInputError) else None
    status = (error.http_status if isinstance(error, RestInputError) else None) or HTTP_STATUS.get(
        error.code, 500
    )
    if status == 401:
        # What Google's front end adds to every 401 (RFC 6750).
        headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    return web.Response(
        status=status,
        body=error_body(status, error.code, error.message, field, error.info),
        content_type=_JSON,
        charset="utf-8",
        headers=headers or None,
    )


class RestApi:
    """The ``/v1/...`` handler: route, decode, dispatch, encode."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one REST call; every EmulatorError becomes Google's error JSON."""
        try:
            return await self._handle(request)
        except EmulatorError as error:
            return error_response(error)

    async def _handle(self, request: web.Request) -> web.Response:
        resolution = rest_routes.resolve(request.method, request.rel_url.raw_path)
        if isinstance(resolution, rest_routes.WrongMethod):
            raise _MethodNotAllowed(request.method, resolution.allowed)
        if isinstance(resolution, rest_routes.UnknownVerb):
            raise EmulatorError(
                grpc.StatusCode.UNIMPLEMENTED, f"Custom method ':{resolution.verb}' is not implemented."
            )
        if resolution is None:
            raise not_found(request)
        route = resolution.route
        fmt = rest_codec.output_format(request.rel_url.query)
        method = METHODS.get(route.rpc)
        if method is None:
            # Same wording as the gRPC side (Dispatcher) for the service's methods we do not serve.
            raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, f"Method {route.rpc} is not implemented.")
        body = await read_body(request) if route.body else b""
        proto_request = build_request(method.request_type, route, resolution.value, request, body)
        caller = Caller.from_pairs(request.headers.items(), "rest")
        response = await self._dispatcher.call(route.rpc, proto_request, caller)
        message = None if response is None else getattr(response, "_pb", response)
        return web.Response(body=rest_codec.render(message, fmt), content_type=_JSON, charset="utf-8")


class _MethodNotAllowed(RestInputError):
    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            grpc.StatusCode.UNIMPLEMENTED,
            f"HTTP method {method} is not allowed on this URL; allowed: {', '.join(allowed)}.",
            http_status=405,
        )
        self.allowed = allowed


def not_found(request: web.Request) -> RestInputError:
    """Google-style 404 for a URL that no route serves."""
    return RestInputError(
        grpc.StatusCode.NOT_FOUND, f"The requested URL {request.rel_url.path} was not found on this server."
    )


async def read_body(request: web.Request) -> bytes:
    """The request body, refusing more than MAX_BODY_BYTES whatever the application's own limit is."""
    limit = rest_codec.MAX_BODY_BYTES
    too_large = RestInputError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Request payload size exceeds the limit: {limit} bytes.",
        http_status=413,
    )
    body = await bounded.read_body(request, limit)
    if body is None:
        raise too_large
    return body


def build_request(
    request_type: Any, route: rest_routes.Route, path_value: str, request: web.Request, body: bytes
) -> Any:
    """The proto-plus request: JSON body, then query parameters, then the path variable (which wins)."""
    message = request_type.pb()()
    top_path_field = route.field.split(".")[0]
    if route.body == "*":
        rest_codec.merge_body(rest_codec.parse_body(body), message, "")
    elif route.body:
        rest_codec.merge_body(rest_codec.parse_body(body), getattr(message, route.body), route.body)
    bound = frozenset({top_path_field, route.body} - {"", "*"})
    rest_codec.merge_query(request.rel_url.query.items(), message, bound, route.body == "*")
    rest_codec.set_path_field(message, route.field, path_value)
    return request_type.wrap(message)


@web.middleware
async def google_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the admin API: unknown URLs get Google's 404 JSON, and an unexpected exception a generic
    500 JSON. The log line names the exception type and where it was raised, never its text (which could
    quote a request value)."""
    if request.rel_url.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error_response(not_found(request))
    except web.HTTPMethodNotAllowed as error:
        return error_response(_MethodNotAllowed(request.method, tuple(sorted(error.allowed_methods))))
    except web.HTTPException:
        raise
    except Exception as error:  # the last line of defence: no traceback to the caller
        where = "".join(traceback.format_tb(error.__traceback__))
        logger.error(
            "unexpected %s while serving %s %s\n%s",
            type(error).__name__,
            request.method,
            request.rel_url.path,
            where,
        )
        internal = EmulatorError(grpc.StatusCode.INTERNAL, "Internal error encountered.")
        return error_response(internal)


def add_rest_routes(app: web.Application, dispatcher: Dispatcher) -> None:
    """Mount ``/v1/...`` routes exactly as Google's REST API defines them (global and regional)."""
    api = RestApi(dispatcher)
    app.router.add_route("*", rest_routes.API_PREFIX + "{tail:.*}", api.handle)
    app.middlewares.append(google_errors)
