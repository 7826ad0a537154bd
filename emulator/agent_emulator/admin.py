"""The emulator's admin API under ``/emulator/v1``: faults, call counters, the clock, a health probe.

JSON in, JSON out. Bad input answers 400 with ``{"error": {"code": 400, "message": ..., "problems": [...]}}``
(each problem ``{"path", "message"}``); unknown admin paths answer a JSON 404 (wrong method: 405).
Never a 500 for bad input.

=====================================  ==============================================================
``GET  /emulator/v1/healthz``          ``{"status": "ok"}``
``GET  /emulator/v1/faults``           current fault config, same shape as the ``--faults`` YAML
``PUT  /emulator/v1/faults``           replace it (reseeds, restarts ``fail_next`` and quota windows)
``POST /emulator/v1/faults:clear``     drop every fault rule (seed and quotas stay)
``GET  /emulator/v1/counters``         ``{"methods": {"GetSecret": {"OK": 3, ...}}, "total": N}``
``POST /emulator/v1/counters:reset``   zero the counters
``GET  /emulator/v1/calls``            ``{"delayed": N}``: calls asleep in an injected latency right now
``GET  /emulator/v1/clock``            ``{"now": RFC 3339, "offset_seconds": n}``
``POST /emulator/v1/clock:advance``    body ``{"seconds": n}``; fires due rotations; returns
                                       ``{"now", "offset_seconds", "rotations_fired"}``
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
from agent_emulator.clock import Clock
from agent_emulator.fault_config import parse_fault_config
from agent_emulator.faults import CallCounters, FaultController
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


def add_admin_routes(
    app: web.Application, *, faults: FaultController, counters: CallCounters, clock: Clock, store: SecretStore
) -> None:
    """Mount ``/emulator/v1/...``: faults (GET/PUT/clear), counters (GET/reset), clock (GET/advance), healthz.

    Advancing the clock runs what the server's timer would run at the new time at once: due rotations
    (SECRET_ROTATE) and due lifecycle changes (expiries, scheduled destructions), so tests need not wait.
    """

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
        return web.json_response({"delayed": faults.delayed_calls})

    async def get_counters(request: web.Request) -> web.StreamResponse:
        return web.json_response(counters.snapshot())

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
        ("POST", "/counters:reset", reset_counters),
        ("GET", "/clock", get_clock),
        ("POST", "/clock:advance", advance_clock),
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
