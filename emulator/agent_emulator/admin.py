"""The emulator's admin API under ``/emulator/v1``: faults, call counters, the clock, a health probe.

JSON in, JSON out. Bad input answers 400 with ``{"error": {"code": 400, "message": ..., "problems": [...]}}``
(each problem ``{"path", "message"}``); unknown admin paths answer a JSON 404 (wrong method: 405).
Never a 500 for bad input.

=====================================  ==============================================================
``GET  /emulator/v1/healthz``          ``{"status": "ok"}``
``GET  /emulator/v1/faults``           current fault config, same shape as the ``--faults`` YAML
``PUT  /emulator/v1/faults``           replace it (reseeds, restarts ``fail_next`` and quota windows)
``POST /emulator/v1/faults:clear``     drop every fault rule (seed and quotas stay)
``GET  /emulator/v1/counters``         ``{"methods": {"GetSecret": {"OK": 3, ...}}, "total": N}``;
                                       ``?by=project``: ``{"projects": {"P": {"GetSecret": {...}}}, "total"}``
                                       per project a call counted against (its quota project, else its own)
``POST /emulator/v1/counters:reset``   zero the counters
``GET  /emulator/v1/calls``            ``{"delayed": N, "calls": [...]}``: calls asleep in an injected
                                       latency right now, and the recent calls (``?limit=N``, default 100,
                                       at most 1000; oldest first): ``time, service, method, resource,
                                       principal, quota_project, result, transport, message`` (never a token)
``POST /emulator/v1/calls:clear``      forget the recent calls
``GET  /emulator/v1/clock``            ``{"now": RFC 3339, "offset_seconds": n}``
``POST /emulator/v1/clock:advance``    body ``{"seconds": n}``; fires due rotations; returns
                                       ``{"now", "offset_seconds", "rotations_fired"}`` (tokens expire on
                                       this clock too)
``GET  /emulator/v1/identity``         the identity config in force (``agent_emulator.identity_config``)
``POST /emulator/v1/identity``         replace it (same document as ``--identity``, as JSON; PUT works
                                       too); tokens already issued stay valid until they expire
``POST /emulator/v1/tokens``           body ``{"principal": EMAIL or principal://..., "lifetime_seconds": n,
                                       "scopes": [...]}`` -> ``{"access_token", "token_type", "expires_in",
                                       "expire_time", "principal"}``, as a GKE metadata server hands out
``POST /emulator/v1/tokens:revoke``    body ``{"access_token": T}`` or ``{"principal": P}`` ->
                                       ``{"revoked": n}``
=====================================  ==============================================================
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent.errors import ConfigError, Problem
from agent_emulator import bounded
from agent_emulator.calls import MAX_ENTRIES, CallLog
from agent_emulator.clock import Clock
from agent_emulator.fault_config import parse_fault_config
from agent_emulator.faults import CallCounters, FaultController
from agent_emulator.identity import IdentityService
from agent_emulator.identity_config import (
    MAX_EXTENDED_LIFETIME_SECONDS,
    check_principal,
    parse_identity_config,
)
from agent_emulator.store import SecretStore

PREFIX = "/emulator/v1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


MAX_BODY_BYTES = 256 * 1024
"""Largest admin request body (a fault config is a few hundred bytes)."""


class BadRequest(Exception):
    """Turned into a JSON answer (400, or ``status``) listing ``problems``."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = (), status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems
        self.status = status


def error_body(status: int, message: str, problems: tuple[Problem, ...] = ()) -> dict[str, Any]:
    """The JSON of an admin error answer."""
    return {
        "error": {
            "code": status,
            "message": message,
            "problems": [{"path": p.path, "message": p.message} for p in problems],
        }
    }


def rfc3339(moment: dt.datetime) -> str:
    """UTC time as Google's APIs write it: ``2024-05-01T12:00:00.123456Z``."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as error:
            return web.json_response(
                error_body(error.status, error.message, error.problems), status=error.status
            )

    return guarded


async def _read_body(request: web.Request) -> bytes:
    body = await bounded.read_body(request, MAX_BODY_BYTES)
    if body is None:
        raise BadRequest(f"the request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    return body


async def _json_body(request: web.Request) -> Any:
    raw = await _read_body(request)
    if not raw.strip():
        raise BadRequest("the request body must be a JSON document")
    try:
        return bounded.loads_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the request body is not valid JSON: it is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"the request body is not valid JSON: {error.msg} at line {error.lineno}") from None
    except bounded.InputError as error:
        raise BadRequest(f"the request body is refused: {error.reason}") from None


def advance_seconds(body: object) -> float:
    """The ``seconds`` of a clock:advance body; BadRequest unless a finite number >= 0."""
    if not isinstance(body, dict) or set(body) != {"seconds"}:
        raise BadRequest(
            'expected {"seconds": n}', (Problem("", 'the body must be exactly {"seconds": <number>}'),)
        )
    seconds = body["seconds"]
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
        raise BadRequest(
            "invalid seconds", (Problem("seconds", f"expected a number, got {bounded.shown(seconds)}"),)
        )
    if seconds < 0:
        raise BadRequest(
            "invalid seconds", (Problem("seconds", "the emulator clock only moves forward (got a negative)"),)
        )
    return float(seconds)


def mint_request(body: object) -> tuple[str, int, tuple[str, ...]]:
    """(principal, lifetime in seconds, scopes) of a ``POST /tokens`` body; BadRequest listing problems."""
    if not isinstance(body, dict):
        raise BadRequest(
            "expected a JSON object", (Problem("", 'expected {"principal": ..., "lifetime_seconds": n}'),)
        )
    problems: list[Problem] = []
    for key in body:
        if key not in ("principal", "lifetime_seconds", "scopes"):
            problems.append(Problem(str(key), "unknown key; expected principal, lifetime_seconds, scopes"))
    principal = ""
    try:
        principal = check_principal(body.get("principal"))
    except ValueError as error:
        problems.append(Problem("principal", str(error)))
    lifetime = body.get("lifetime_seconds", 3600)
    if (
        not isinstance(lifetime, int)
        or isinstance(lifetime, bool)
        or not 1 <= lifetime <= MAX_EXTENDED_LIFETIME_SECONDS
    ):
        problems.append(
            Problem(
                "lifetime_seconds",
                f"expected whole seconds from 1 to {MAX_EXTENDED_LIFETIME_SECONDS}, "
                f"got {bounded.shown(lifetime)}",
            )
        )
        lifetime = 3600
    scopes = body.get("scopes", ["https://www.googleapis.com/auth/cloud-platform"])
    if (
        not isinstance(scopes, list)
        or len(scopes) > 100
        or not all(isinstance(x, str) and 0 < len(x) <= 1024 for x in scopes)
    ):
        problems.append(Problem("scopes", "expected a list of at most 100 scope URLs"))
        scopes = []
    if problems:
        raise BadRequest("invalid token request", tuple(problems))
    return principal, lifetime, tuple(scopes)


def _limit(request: web.Request) -> int:
    text = request.rel_url.query.get("limit", "100")
    if not text.isdigit() or not 0 <= int(text[:6]) <= MAX_ENTRIES:
        raise BadRequest(
            "invalid limit", (Problem("limit", f"expected a whole number from 0 to {MAX_ENTRIES}"),)
        )
    return int(text)


def add_admin_routes(
    app: web.Application,
    *,
    faults: FaultController,
    counters: CallCounters,
    clock: Clock,
    store: SecretStore,
    identity: IdentityService | None = None,
    calls: CallLog | None = None,
) -> None:
    """Mount ``/emulator/v1/...``: faults (GET/PUT/clear), counters (GET/reset), calls (GET/clear), clock
    (GET/advance), identity (GET/POST), tokens (mint/revoke), healthz.

    Advancing the clock runs what the server's timer would run at the new time at once: due rotations
    (SECRET_ROTATE) and due lifecycle changes (expiries, scheduled destructions), so tests need not wait.
    """
    calls = calls if calls is not None else CallLog()
    identity = (
        identity if identity is not None else IdentityService(parse_identity_config(None), clock, calls)
    )

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def get_faults(request: web.Request) -> web.StreamResponse:
        return web.json_response(faults.config.to_json())

    async def put_faults(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        try:
            config = parse_fault_config(body)
        except ConfigError as error:
            raise BadRequest("invalid fault config", error.problems) from None
        faults.replace(config)
        return web.json_response(faults.config.to_json())

    async def clear_faults(request: web.Request) -> web.StreamResponse:
        faults.clear()
        return web.json_response(faults.config.to_json())

    async def get_calls(request: web.Request) -> web.StreamResponse:
        recent = [entry.to_json() for entry in calls.recent(_limit(request))]
        return web.json_response({"delayed": faults.delayed_calls, "calls": recent})

    async def clear_calls(request: web.Request) -> web.StreamResponse:
        calls.clear()
        return web.json_response({"delayed": faults.delayed_calls, "calls": []})

    async def get_counters(request: web.Request) -> web.StreamResponse:
        by = request.rel_url.query.get("by")
        if by == "project":
            return web.json_response(counters.by_project())
        if by is not None:
            raise BadRequest("invalid by", (Problem("by", "expected 'project' (or no by= at all)"),))
        return web.json_response(counters.snapshot())

    def identity_json() -> dict[str, Any]:
        config = identity.config
        return {
            "config": dict(config.document),
            "require_auth": config.require_auth,
            "providers": sorted(config.providers),
            "service_accounts": sorted(config.service_accounts),
            "live_tokens": len(identity.tokens),
        }

    async def get_identity(request: web.Request) -> web.StreamResponse:
        return web.json_response(identity_json())

    async def put_identity(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        try:
            config = parse_identity_config(body)
        except ConfigError as error:
            raise BadRequest("invalid identity config", error.problems) from None
        identity.replace(config)
        return web.json_response(identity_json())

    async def mint_token(request: web.Request) -> web.StreamResponse:
        principal, lifetime, scopes = mint_request(await _json_body(request))
        return web.json_response(identity.mint(principal, lifetime, scopes))

    async def revoke_tokens(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, dict) and set(body) == {"access_token"} and isinstance(body["access_token"], str):
            return web.json_response({"revoked": identity.tokens.revoke(body["access_token"])})
        if isinstance(body, dict) and set(body) == {"principal"}:
            try:
                principal = check_principal(body["principal"])
            except ValueError as error:
                raise BadRequest("invalid principal", (Problem("principal", str(error)),)) from None
            return web.json_response({"revoked": identity.tokens.revoke_principal(principal)})
        raise BadRequest(
            'expected {"access_token": ...} or {"principal": ...}',
            (Problem("", "the body must be exactly one of access_token or principal"),),
        )

    async def reset_counters(request: web.Request) -> web.StreamResponse:
        counters.reset()
        return web.json_response(counters.snapshot())

    def clock_json() -> dict[str, Any]:
        return {"now": rfc3339(clock.now()), "offset_seconds": clock.offset_seconds}

    async def get_clock(request: web.Request) -> web.StreamResponse:
        return web.json_response(clock_json())

    async def advance_clock(request: web.Request) -> web.StreamResponse:
        seconds = advance_seconds(await _json_body(request))
        try:
            # Checked before moving: a clock pushed past year 9999 would break every later call.
            clock.now() + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise BadRequest(
                "invalid seconds", (Problem("seconds", "too large: the clock would pass year 9999"),)
            ) from None
        clock.advance(seconds)
        fired = store.fire_due_rotations()
        lifecycle = store.apply_due_lifecycle()
        return web.json_response({**clock_json(), "rotations_fired": fired, "lifecycle_changes": lifecycle})

    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/healthz", healthz),
        ("GET", "/faults", get_faults),
        ("PUT", "/faults", put_faults),
        ("POST", "/faults:clear", clear_faults),
        ("GET", "/counters", get_counters),
        ("GET", "/calls", get_calls),
        ("POST", "/calls:clear", clear_calls),
        ("POST", "/counters:reset", reset_counters),
        ("GET", "/clock", get_clock),
        ("POST", "/clock:advance", advance_clock),
        ("GET", "/identity", get_identity),
        ("POST", "/identity", put_identity),
        ("PUT", "/identity", put_identity),
        ("POST", "/tokens", mint_token),
        ("POST", "/tokens:revoke", revoke_tokens),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, _guarded(handler))
    allowed: dict[str, list[str]] = {}
    for method, path, _ in routes:
        allowed.setdefault(PREFIX + path, []).append(method)

    async def no_route(request: web.Request) -> web.StreamResponse:
        methods = allowed.get(request.path)
        if methods is not None:
            message = f"{request.method} is not allowed on {request.path}; use {' or '.join(methods)}"
            return web.json_response(
                error_body(405, message), status=405, headers={"Allow": ", ".join(methods)}
            )
        known = ", ".join(f"{m} {p}" for p, ms in allowed.items() for m in ms)
        message = f"no admin route {request.method} {request.path}; the routes are: {known}"
        return web.json_response(error_body(404, message), status=404)

    # Registered last, so it only answers what no route above matched.
    app.router.add_route("*", PREFIX + "/{tail:.*}", no_route)
