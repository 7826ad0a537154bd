"""The request handlers: what each route answers, and how a value is represented (raw bytes or JSON, its
ETag, Last-Modified and version headers).

Handlers serve from memory only (the SnapshotStore): they cannot reach the backend, read a file by name or
serve a secret that is not assigned to this agent. They run behind the middlewares, so they see only
requests that carried the right token, and they leave what the audit log needs in the request
(``state.AUDIT_VERSION``) instead of logging anything themselves.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from agent.config import parse_delay
from agent.core.model import Fetched
from agent.endpoint.responses import RETRY_AFTER_SECONDS, SECURITY_HEADERS, STATUS_MESSAGES, error_response
from agent.endpoint.state import AUDIT_VERSION, STATE, STREAMING, EndpointState

BODY_TIMEOUT = 5.0
"""Seconds a request body may take to arrive."""
REFRESH_TOO_SOON = "refresh asked too soon after the last one: retry after Retry-After seconds"
"""The 429 of ``POST /v1/refresh``."""


# -- how a value is represented --------------------------------------------------------------------------


def etag_of(item: Fetched) -> str:
    """The quoted strong ETag of a value: version and CRC32C, so a re-created version 1 still differs."""
    return f'"{item.version}-{item.crc32c:08x}"'


def rfc3339(unix_time: float) -> str:
    """``2024-05-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value_headers(item: Fetched) -> dict[str, str]:
    return {
        "X-Secret-Version": item.version,
        "ETag": etag_of(item),
        "Last-Modified": email.utils.formatdate(item.fetched_at, usegmt=True),
        # Also set for every response by the security-headers hook; here too, so the hot path finds them
        # present.
        **SECURITY_HEADERS,
    }


def _headers_of(state: EndpointState, item: Fetched) -> dict[str, str]:
    """The value headers of ``item`` (a fresh dict: aiohttp adopts it), computed once per version."""
    cached = state.value_headers.get(item.name)
    if cached is None or cached[0] is not item:
        cached = state.value_headers[item.name] = (item, _value_headers(item))
    return dict(cached[1])


def _value_response(item: Fetched, as_json: bool, headers: dict[str, str]) -> web.Response:
    if not as_json:
        return web.Response(body=item.data, content_type="application/octet-stream", headers=headers)
    body: dict[str, str] = {"name": item.name, "version": item.version}
    try:
        body.update(value=item.data.decode("utf-8"), encoding="utf-8")
    except UnicodeDecodeError:
        body.update(value=base64.b64encode(item.data).decode("ascii"), encoding="base64")
    body["updated"] = rfc3339(item.fetched_at)
    return web.json_response(body, headers=headers)


# -- request parsing ---------------------------------------------------------------------------------


def parse_wait(raw: str | None, cap: float) -> float | None:
    """``?wait=`` -> seconds capped at ``cap``; None when absent. ``0`` means do not wait.

    Raises ValueError (whose text must not be shown: it quotes the input) for anything else."""
    if raw is None:
        return None
    return min(parse_delay(raw), cap)


def _matches(if_none_match: tuple[Any, ...] | None, item: Fetched) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``*`` or any listed tag equal to the current one."""
    if not if_none_match:
        return False
    current = etag_of(item)[1:-1]
    return any(tag.value in ("*", current) for tag in if_none_match)


# -- handlers ------------------------------------------------------------------------------------------


_NO_QUERY: dict[str, str] = {}


async def get_secret(request: web.Request) -> web.StreamResponse:
    """``GET /v1/secrets/{name}``: the value, a 304, or a long-poll (``?wait=``) for a new one."""
    state = request.app[STATE]
    name = request.match_info["name"]
    # Only exact local names: a dict lookup, never a path, a reference or a backend call.
    if name not in state.store.specs:
        return error_response(404, "unknown secret")
    # Most reads carry no query: skip parsing one.
    query = request.query if request.query_string else _NO_QUERY
    output = query.get("format", "raw")
    if output not in ("raw", "json"):
        return error_response(400, "format must be raw or json")
    try:
        wait = parse_wait(query.get("wait"), state.max_wait)
    except ValueError:
        return error_response(400, "wait must be a duration such as 30s, 500ms or 2m, or a number of seconds")
    if_none_match = request.if_none_match
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (wait or 0.0)
    while True:
        # Generation first: a publish between the two reads is then seen by the wait below.
        generation = state.store.generation
        item = state.store.snapshot.get(name)
        if item is not None and not _matches(if_none_match, item):
            request[AUDIT_VERSION] = item.version
            return _value_response(item, output == "json", _headers_of(state, item))
        remaining = deadline - loop.time()
        if remaining <= 0 or state.stopping.is_set():
            break
        await state.wait_for_change(generation, remaining)
    if item is None:
        return error_response(
            503, "not fetched yet: retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    request[AUDIT_VERSION] = item.version
    return web.Response(status=304, headers=_headers_of(state, item))


async def list_secrets(request: web.Request) -> web.StreamResponse:
    """``GET /v1/secrets``: every assigned name with its version and update time, never a value."""
    state = request.app[STATE]
    snapshot = state.store.snapshot
    listed = []
    for name in sorted(state.store.specs):
        item = snapshot.get(name)
        listed.append(
            {
                "name": name,
                "version": None if item is None else item.version,
                "updated": None if item is None else rfc3339(item.fetched_at),
            }
        )
    return web.json_response({"secrets": listed})


def _rotation_event(item: Fetched) -> bytes:
    data = json.dumps({"name": item.name, "version": item.version, "time": rfc3339(item.fetched_at)})
    return f"event: rotated\ndata: {data}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events``: Server-Sent Events, one ``rotated`` event per changed secret, pings when quiet."""
    state = request.app[STATE]
    store = state.store
    # The baseline is taken before the stream opens, so a change after the first byte is never missed.
    generation = store.generation
    seen = {name: etag_of(item) for name, item in store.snapshot.items.items()}
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    request[STREAMING] = True
    loop = asyncio.get_running_loop()
    try:
        await response.write(b": connected\n\n")
        last_write = loop.time()
        while not state.stopping.is_set():
            quiet_for = loop.time() - last_write
            if quiet_for >= state.ping_interval:
                await response.write(b": ping\n\n")
                last_write = loop.time()
                continue
            await state.wait_for_change(generation, state.ping_interval - quiet_for)
            if store.generation == generation:
                continue
            generation = store.generation
            for name, item in sorted(store.snapshot.items.items()):
                tag = etag_of(item)
                if seen.get(name) != tag:
                    seen[name] = tag
                    await response.write(_rotation_event(item))
                    last_write = loop.time()
    except ConnectionError:
        pass  # the client hung up; nothing to tell anyone
    return response


async def refresh(request: web.Request) -> web.StreamResponse:
    """``POST /v1/refresh``: ask the sync loop to check the backend now (202); the body is ignored.

    The sync loop decides: requests while a round is queued join it (202), and one asked too soon after the
    last forced round is refused (429 with ``Retry-After``), so no local caller can turn requests into
    Secret Manager calls at will."""
    # Reading the body enforces client_max_size (413); the deadline stops a body that never arrives
    # from holding a connection slot.
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            await request.read()
    except TimeoutError:
        return error_response(408, STATUS_MESSAGES[408])
    retry_after = request.app[STATE].refresh()
    if retry_after is not None:
        # Whole seconds (RFC 9110 delay-seconds), rounded up so that a client honouring it is accepted.
        seconds = max(1, math.ceil(retry_after))
        return error_response(429, REFRESH_TOO_SOON, headers={"Retry-After": str(seconds)})
    return web.json_response({"status": "refresh requested"}, status=202)


async def openapi(request: web.Request) -> web.StreamResponse:
    """``GET /openapi.json``: this endpoint's OpenAPI document (no token needed)."""
    return web.Response(body=request.app[STATE].openapi, content_type="application/json")
