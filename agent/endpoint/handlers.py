"""The request handlers: what each route answers, and how a value is represented (raw bytes or JSON, its
ETag, Last-Modified and version headers).

A read answers what the app would find in the file: ``/v1/secrets/{name}`` the secret's own output (its
``key`` taken out, its payload decoded; the value as fetched while a snapshot is not rendered, for a secret
whose file is its payload), ``/v1/files/{path}`` any rendered file (a key's, a template's) by its path
inside ``output_dir``.

Handlers serve from memory only (the SnapshotStore): they cannot reach the backend, open a file (a path is
only a key into the snapshot's outputs) or serve a secret that is not assigned to this agent. They run
behind the guard (``middlewares.py``), so they see only requests that carried the right token, and a read
returns what the audit log needs (the version it answered with) instead of logging anything itself.

What a value's responses carry besides its bytes (ETag, Last-Modified, the JSON form) is made once per
object served, not per request: a read that polls is answered with a dict lookup and an identity check.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import math
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy, istr

from agent.config import parse_delay
from agent.core.model import Fetched, Snapshot
from agent.endpoint.responses import (
    JSON,
    RETRY_AFTER_SECONDS,
    SECURITY_HEADERS,
    STATUS_MESSAGES,
    error_response,
    headers_with,
    json_response,
)
from agent.endpoint.state import STREAMING, EndpointState, ReadResult, Served

X_SECRET_VERSION = istr("X-Secret-Version")
"""The header that names the version a read answered with (an ``istr``, like aiohttp's ``hdrs``: see
``responses.SECURITY_HEADERS``)."""
ETAG = istr("ETag")
"""Spelled as RFC 9110 does (aiohttp's ``hdrs.ETAG`` is ``Etag``)."""
BODY_TIMEOUT = 5.0
"""Seconds a request body may take to arrive."""
REFRESH_TOO_SOON = "refresh asked too soon after the last one: retry after Retry-After seconds"
"""The 429 of ``POST /v1/refresh``."""


# -- how a value is represented --------------------------------------------------------------------------


def etag_of(value: Served) -> str:
    """The quoted strong ETag of a value: version and CRC32C, so a re-created version 1 still differs (and
    a template, whose version is its content tag, still gets one of the same shape)."""
    return f'"{value.version}-{value.crc32c:08x}"'


def rfc3339(unix_time: float) -> str:
    """``2024-05-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Representation:
    """How one served object is answered, made once for it: the headers of its raw bytes and of a 304
    (version, ETag, Last-Modified, the security headers), and its JSON form when first asked for.

    The headers are read-only proxies: aiohttp copies a response's headers from what it is given, and were
    it ever to adopt them instead, writing to these would fail loudly rather than leak one response's
    headers into the next."""

    __slots__ = ("_json", "field", "key", "not_modified", "raw", "tag", "value")

    def __init__(self, value: Served, field: str, key: str) -> None:
        self.value = value
        self.field = field
        """``name`` or ``path``: how the JSON form names the value (``key``)."""
        self.key = key
        tag = etag_of(value)
        self.tag = tag[1:-1]
        """The ETag without its quotes, as If-None-Match's tags are parsed."""
        common = {
            X_SECRET_VERSION: value.version,
            ETAG: tag,
            hdrs.LAST_MODIFIED: email.utils.formatdate(value.fetched_at, usegmt=True),
            **SECURITY_HEADERS,
        }
        self.not_modified = CIMultiDictProxy(CIMultiDict(common))
        self.raw = CIMultiDictProxy(CIMultiDict({**common, hdrs.CONTENT_TYPE: "application/octet-stream"}))
        self._json: tuple[bytes, CIMultiDictProxy[str]] | None = None

    def response(self, as_json: bool) -> web.Response:
        """The 200: raw bytes, or the JSON object that names the value by ``field``."""
        if not as_json:
            return web.Response(body=self.value.data, headers=self.raw)
        if self._json is None:
            self._json = (
                self._json_body(),
                CIMultiDictProxy(CIMultiDict({**self.not_modified, hdrs.CONTENT_TYPE: JSON})),
            )
        body, headers = self._json
        return web.Response(body=body, headers=headers)

    def _json_body(self) -> bytes:
        value = self.value
        body: dict[str, str] = {self.field: self.key, "version": value.version}
        try:
            body.update(value=value.data.decode("utf-8"), encoding="utf-8")
        except UnicodeDecodeError:
            body.update(value=base64.b64encode(value.data).decode("ascii"), encoding="base64")
        body["updated"] = rfc3339(value.fetched_at)
        return json.dumps(body).encode()


def _represent(cache: dict[str, Representation], key: str, value: Served, field: str) -> Representation:
    """The Representation of ``value`` served under ``key``, made once per object: an identity check, so a
    new snapshot's new value or output is never answered with the old headers, and one the renderer carried
    over unchanged keeps those that still hold."""
    known = cache.get(key)
    if known is None or known.value is not value:
        known = cache[key] = Representation(value, field, key)
    return known


# -- what a read serves, from one snapshot -----------------------------------------------------------------


def _own_value(snapshot: Snapshot, name: str) -> Served | None:
    """What the file of secret ``name`` holds: its rendered own output, or, in a snapshot not rendered, the
    value as fetched (then the file holds exactly that)."""
    if snapshot.outputs is None:
        return snapshot.items.get(name)
    return snapshot.secret_output(name)


def _own_output(snapshot: Snapshot, name: str) -> Served | None:
    """For a secret whose file is not its payload (a ``key`` taken out, a base64 payload decoded): only a
    rendered output. Until the snapshot is rendered nothing is served, rather than the payload as fetched,
    which is not what the file holds and may carry fields the configuration chose not to deliver."""
    return None if snapshot.outputs is None else snapshot.secret_output(name)


def _file_value(snapshot: Snapshot, path: str) -> Served | None:
    return snapshot.file_outputs().get(path)


_Lookup = Callable[[Snapshot, str], Served | None]


# -- request parsing ---------------------------------------------------------------------------------


def parse_wait(raw: str | None, cap: float) -> float | None:
    """``?wait=`` -> seconds capped at ``cap``; None when absent. ``0`` means do not wait.

    Raises ValueError (whose text must not be shown: it quotes the input) for anything else."""
    if raw is None:
        return None
    return min(parse_delay(raw), cap)


def _matches(if_none_match: tuple[Any, ...] | None, tag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``*`` or any listed tag equal to the current one (unquoted)."""
    if not if_none_match:
        return False
    return any(listed.value in ("*", tag) for listed in if_none_match)


def _read_options(request: web.Request, max_wait: float) -> tuple[bool, float | None] | web.Response:
    """``(as_json, wait)`` from the query, or the 400 that refuses it (fixed messages: never the input)."""
    query = request.query
    output = query.get("format", "raw")
    if output not in ("raw", "json"):
        return error_response(400, "format must be raw or json")
    try:
        wait = parse_wait(query.get("wait"), max_wait)
    except ValueError:
        return error_response(400, "wait must be a duration such as 30s, 500ms or 2m, or a number of seconds")
    return output == "json", wait


# -- handlers ------------------------------------------------------------------------------------------


NOT_FETCHED = "not fetched yet: retry shortly"
"""The 503 of a secret whose value has not arrived."""
NOT_RENDERED = "not rendered yet: retry shortly"
"""The 503 of a value that arrived but whose snapshot is not rendered yet (a secret with ``key`` or
``decode``), and of a configured file whose secrets have not all arrived."""
NO_SUCH_FILE = "no rendered file at this path (only files the configuration renders, by path in output_dir)"
"""The 404 of ``/v1/files/{path}``: the path is the client's free text (it could be 4 KB of anything),
never echoed."""
_RETRY = {hdrs.RETRY_AFTER: str(RETRY_AFTER_SECONDS)}


def not_delivered(name: str) -> str:
    """The 404 of a ``deliver: false`` secret. ``name`` is an assigned name (from the configuration, checked
    before this is called), not the client's text."""
    return (
        f"secret {name!r} is not delivered on its own (deliver: false): read its keys or templates under "
        "/v1/files/"
    )


class Handlers:
    """The handlers of one endpoint (its state bound once, not looked up in the application per request),
    with the Representations of what its reads served."""

    def __init__(self, state: EndpointState) -> None:
        self._state = state
        self._store = state.store
        self._secrets: dict[str, Representation] = {}
        """Per secret name: the Representation of what was last served."""
        self._files: dict[str, Representation] = {}
        """The same per file path, apart: a path may spell a secret's name (the file of ``db`` is ``db``)."""
        self._store.removal_listeners.append(self._forget)

    def _forget(self, names: Collection[str]) -> None:
        """Drop what was prepared for secrets that are no longer served (a selection let them go): their
        Representations hold the value, which must not outlive the secret in this process. Which files a
        removed secret made (its own, its keys', templates') is the renderer's business, so every file's is
        dropped; they are made again on their next read (removals are rare)."""
        for name in names:
            self._secrets.pop(name, None)
        self._files.clear()

    def answer_secret(self, request: web.Request, name: str) -> ReadResult | None:
        """What ``get_secret`` answers, when that needs no waiting and no options: a 404, or the value;
        None when ``get_secret`` must answer (a query, If-None-Match, no value yet)."""
        # Only exact local names: a dict lookup, never a path, a reference or a backend call.
        spec = self._store.specs.get(name)
        if spec is None:
            return error_response(404, "unknown secret"), None, None
        if not spec.deliver:
            # Decided by the configuration, not the snapshot: such a secret is never served on its own, not
            # even from a snapshot not rendered yet (which would still hold its whole payload).
            return error_response(404, not_delivered(name)), None, "not_delivered"
        if request.query_string or hdrs.IF_NONE_MATCH in request.headers:
            return None
        snapshot = self._store.snapshot
        # _own_value or _own_output, inline: this runs for every read.
        value: Served | None
        if snapshot.outputs is not None:
            value = snapshot.secret_output(name)
        elif spec.key is None and spec.decode == "none":
            value = snapshot.items.get(name)
        else:
            return None
        if value is None:
            return None
        known = self._secrets.get(name)
        if known is None or known.value is not value:
            known = self._secrets[name] = Representation(value, "name", name)
        return web.Response(body=value.data, headers=known.raw), value.version, None

    async def get_secret(self, request: web.Request, name: str) -> ReadResult:
        """``GET /v1/secrets/{name}``: what the secret's file holds, a 304, or a long-poll (``?wait=``) for
        a new one."""
        answered = self.answer_secret(request, name)
        if answered is not None:
            return answered
        spec = self._store.specs[name]  # answer_secret answers for a name not assigned
        lookup = _own_value if spec.key is None and spec.decode == "none" else _own_output
        served, version = await self._serve(request, self._secrets, name, lookup, "name")
        if served is not None:
            return served, version, None
        message = NOT_FETCHED if self._store.snapshot.get(name) is None else NOT_RENDERED
        return error_response(503, message, _RETRY), None, None

    def answer_file(self, request: web.Request, path: str) -> ReadResult | None:
        """What ``get_file`` answers, when that needs no waiting and no options (see ``answer_secret``)."""
        if not self._state.known_file(path):
            return error_response(404, NO_SUCH_FILE), None, None
        if request.query_string or hdrs.IF_NONE_MATCH in request.headers:
            return None
        value = self._store.snapshot.file_outputs().get(path)
        if value is None:
            return None
        known = self._files.get(path)
        if known is None or known.value is not value:
            known = self._files[path] = Representation(value, "path", path)
        return web.Response(body=value.data, headers=known.raw), value.version, None

    async def get_file(self, request: web.Request, path: str) -> ReadResult:
        """``GET /v1/files/{path}``: a rendered file (a secret's own, a key's, a template's) by its path
        inside ``output_dir``, with the same 304 and long-poll as a secret.

        The path is only ever a key into the configured outputs: it is never joined to a directory, so
        ``..``, ``%2e%2e``, an absolute path or a symlink name reaches no file; what the agent wrote is
        served from memory, exactly as the snapshot holds it."""
        answered = self.answer_file(request, path)
        if answered is not None:
            return answered
        served, version = await self._serve(request, self._files, path, _file_value, "path")
        if served is not None:
            return served, version, None
        return error_response(503, NOT_RENDERED, _RETRY), None, None

    async def _serve(
        self, request: web.Request, cache: dict[str, Representation], key: str, lookup: _Lookup, field: str
    ) -> tuple[web.StreamResponse | None, str | None]:
        """The read of ``lookup(snapshot, key)`` shared by secrets and files: the value, a 400, a 304 (the
        client's ETag is current, also when a long-poll ends), or None when there is nothing to serve (yet)
        once any wait is over (the caller says why, with a 503); and the version answered with."""
        as_json, wait = False, None
        # Most reads carry no query: skip parsing one.
        if request.query_string:
            options = _read_options(request, self._state.max_wait)
            if isinstance(options, web.Response):
                return options, None
            as_json, wait = options
        if_none_match = request.if_none_match
        store = self._store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait or 0.0)
        while True:
            # Generation first: a publish between the two reads is then seen by the wait below.
            generation = store.generation
            value = lookup(store.snapshot, key)
            if value is not None:
                representation = _represent(cache, key, value, field)
                if not _matches(if_none_match, representation.tag):
                    return representation.response(as_json), value.version
            remaining = deadline - loop.time()
            if remaining <= 0 or self._state.stopping.is_set():
                break
            await self._state.wait_for_change(generation, remaining)
        if value is None:
            return None, None
        return web.Response(status=304, headers=representation.not_modified), value.version

    async def list_secrets(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/secrets``: every assigned name with its version and update time, never a value."""
        snapshot = self._store.snapshot
        listed = []
        for name in sorted(self._store.specs):
            item = snapshot.get(name)
            listed.append(
                {
                    "name": name,
                    "version": None if item is None else item.version,
                    "updated": None if item is None else rfc3339(item.fetched_at),
                }
            )
        return json_response({"secrets": listed})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/events``: Server-Sent Events, one ``rotated`` event per changed secret, pings when
        quiet."""
        state = self._state
        store = self._store
        # The baseline is taken before the stream opens, so a change after the first byte is never missed.
        generation = store.generation
        seen = {name: etag_of(item) for name, item in store.snapshot.items.items()}
        response = web.StreamResponse(
            headers=headers_with("text/event-stream", {istr("X-Accel-Buffering"): "no"}),
        )
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

    async def refresh(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/refresh``: ask the sync loop to check the backend now (202); the body is ignored.

        The sync loop decides: requests while a round is queued join it (202), and one asked too soon after
        the last forced round is refused (429 with ``Retry-After``), so no local caller can turn requests
        into Secret Manager calls at will."""
        # Reading the body enforces client_max_size (413); the deadline stops a body that never arrives
        # from holding a connection slot.
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                await request.read()
        except TimeoutError:
            return error_response(408, STATUS_MESSAGES[408])
        retry_after = self._state.refresh()
        if retry_after is not None:
            # Whole seconds (RFC 9110 delay-seconds), rounded up so that a client honouring it is accepted.
            seconds = max(1, math.ceil(retry_after))
            return error_response(429, REFRESH_TOO_SOON, headers={hdrs.RETRY_AFTER: str(seconds)})
        return json_response({"status": "refresh requested"}, status=202)

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        """``GET /openapi.json``: this endpoint's OpenAPI document (no token needed)."""
        return web.Response(body=self._state.openapi, headers=headers_with("application/json"))


def _rotation_event(item: Fetched) -> bytes:
    data = json.dumps({"name": item.name, "version": item.version, "time": rfc3339(item.fetched_at)})
    return f"event: rotated\ndata: {data}\n\n".encode()
