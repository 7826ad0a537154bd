"""The local endpoint under test: a real aiohttp server on 127.0.0.1 (port 0) over a real SnapshotStore.

* ``running_endpoint(...)`` starts ``serve_endpoint`` as a task and yields an ``Endpoint`` (URL helpers,
  the store, the refresh calls, the recorded metrics); leaving it cancels the task (a clean stop).
* ``ObservedStore`` is the real store that also counts long-poll waiters, so a test can publish exactly
  when a request is known to be waiting, instead of sleeping.
* ``raw_request`` sends exact bytes, for requests an HTTP client would normalise or refuse to send.
* ``RENDERED_SPECS`` / ``render_by_hand``: a configuration with keys, a ``key:`` secret, a base64 secret, a
  ``deliver: false`` secret and templates, and the outputs the renderer makes of it, built by hand so that
  the endpoint's tests do not depend on the renderer (``test_rendered_outputs`` also checks the real one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.config import KeySpec, SecretSpec, TemplateSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Output, OutputKind, Snapshot, crc32c
from agent.core.store import SnapshotStore
from agent.endpoint.application import build_endpoint_app
from agent.endpoint.serve import serve_endpoint
from agent.endpoint.token import TOKEN_HEADER
from agent.observe.metrics import Metrics

TOKEN = "endpoint-test-token-5d0c1e77"
WRONG_TOKEN = "wrong-token-marker-0c9a41ee"
"""A token that is not the endpoint's: it must never be echoed or logged either."""
CANARY = b"canary-endpoint-3b9f-if-you-read-this-it-leaked"
"""The value of ``db``: it may appear in a 200 body of ``db`` and nowhere else."""
BINARY = bytes(range(256))
"""The value of ``tls``: not UTF-8, so ``format=json`` must base64 it."""
FETCHED_AT = 1_714_564_800.25  # 2024-05-01T12:00:00.250Z


def spec(name: str, **options: Any) -> SecretSpec:
    return SecretSpec(
        name=name, ref=parse_ref(f"projects/test-project/secrets/{name}/versions/latest"), **options
    )


def fetched(name: str, data: bytes, version: str, at: float = FETCHED_AT) -> Fetched:
    return Fetched(name=name, version=version, data=data, crc32c=crc32c(data), fetched_at=at)


SPECS = [spec("db"), spec("tls"), spec("pending")]
"""``pending`` is assigned but never fetched (503)."""
INITIAL = Snapshot({"db": fetched("db", CANARY, "3"), "tls": fetched("tls", BINARY, "7")})


# -- a rendered configuration: keys, a key: secret, a base64 secret, deliver: false, templates ---------------

KEY_CANARY = b"canary-key-91e4-the-password-field"
"""The ``password`` field of ``creds``: served only by ``/v1/files/creds/password`` and the template."""
API_TOKEN = b"canary-api-token-62af"
"""The ``token`` field of ``api`` (``key: token``): what its file, and ``/v1/secrets/api``, hold."""
API_OTHER = b"canary-api-other-field-0b3d"
"""Another field of ``api``'s payload: in no file, so never served."""
CERT = bytes(range(255, -1, -1))
"""``cert``'s value once decoded (``decode: base64``); its payload is the base64 text."""


def creds_payload(password: bytes = KEY_CANARY) -> bytes:
    return json.dumps({"user": "app", "password": password.decode()}).encode()


RENDERED_SPECS = [
    *SPECS,
    spec(
        "creds",
        deliver=False,
        format="json",
        keys=(
            KeySpec(key="password", file="creds/password", env="CREDS_PASSWORD"),
            KeySpec(key="user", file="creds/user"),
        ),
    ),
    spec("api", key="token", format="json"),
    spec("cert", decode="base64"),
]
RENDERED_TEMPLATES = [
    TemplateSpec(name="app", file="config/app.yaml", format="yaml", secrets=("creds", "db")),
    TemplateSpec(name="later", file="config/later.env", format="dotenv", secrets=("pending",)),
]
RENDERED_FILES = frozenset(
    {
        "db",
        "tls",
        "pending",
        "creds/password",
        "creds/user",
        "api",
        "cert",
        "config/app.yaml",
        "config/later.env",
    }
)
"""Every file of that configuration; ``pending`` and ``config/later.env`` wait for ``pending``."""
UNRENDERED_FILES = frozenset({"pending", "config/later.env"})
RENDERED_ITEMS = {
    **INITIAL.items,
    "creds": fetched("creds", creds_payload(), "5"),
    "api": fetched(
        "api", json.dumps({"token": API_TOKEN.decode(), "other": API_OTHER.decode()}).encode(), "2"
    ),
    "cert": fetched("cert", base64.b64encode(CERT), "9"),
}


def _output(
    kind: OutputKind, owner: str, data: bytes, version: str | None, file: str, at: float, **extra: Any
) -> Output:
    checksum = crc32c(data)
    return Output(
        kind, owner, data, version or f"c{checksum:08x}", checksum, file=file, fetched_at=at, **extra
    )


def render_by_hand(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with the outputs the renderer makes of RENDERED_SPECS and RENDERED_TEMPLATES (the same
    kinds, versions, checksums and times; a template's bytes need only be some deterministic text here)."""
    outputs: list[Output] = []
    for name in ("db", "tls", "pending"):
        if (item := snapshot.get(name)) is not None:
            outputs.append(_output("secret", name, item.data, item.version, name, item.fetched_at))
    creds = snapshot.get("creds")
    if creds is not None:
        fields = json.loads(creds.data)
        for key in ("password", "user"):
            data = fields[key].encode()
            outputs.append(
                _output("key", "creds", data, creds.version, f"creds/{key}", creds.fetched_at, key=key)
            )
    if (api := snapshot.get("api")) is not None:
        token = json.loads(api.data)["token"].encode()
        outputs.append(_output("secret", "api", token, api.version, "api", api.fetched_at, key="token"))
    if (cert := snapshot.get("cert")) is not None:
        outputs.append(
            _output("secret", "cert", base64.b64decode(cert.data), cert.version, "cert", cert.fetched_at)
        )
    db = snapshot.get("db")
    if creds is not None and db is not None:
        text = f"creds: {creds.data.decode()}\ndb: {db.data.decode()}\n".encode()
        outputs.append(
            _output("template", "app", text, None, "config/app.yaml", max(creds.fetched_at, db.fetched_at))
        )
    if (pending := snapshot.get("pending")) is not None:
        text = b"PENDING=" + pending.data + b"\n"
        outputs.append(_output("template", "later", text, None, "config/later.env", pending.fetched_at))
    return snapshot.with_outputs(outputs)


RENDERED = render_by_hand(Snapshot(RENDERED_ITEMS))


class ObservedStore(SnapshotStore):
    """The real SnapshotStore; also counts calls of ``wait_for_generation`` (long-polls, event streams)."""

    def __init__(self, specs: Sequence[SecretSpec]) -> None:
        super().__init__(specs)
        self.wait_calls = 0
        self._wait_seen = asyncio.Condition()

    async def wait_for_generation(
        self, after: int, within: float, *, unless: asyncio.Future[None] | None = None
    ) -> int:
        async with self._wait_seen:
            self.wait_calls += 1
            self._wait_seen.notify_all()
        return await super().wait_for_generation(after, within, unless=unless)

    async def waiters_reach(self, count: int, within: float = 10.0) -> None:
        """Return once ``wait_for_generation`` has been called ``count`` times in all."""
        async with self._wait_seen:
            await asyncio.wait_for(self._wait_seen.wait_for(lambda: self.wait_calls >= count), within)


class RecordingMetrics(Metrics):
    """The project's Metrics, also recording every ``request`` call for assertions."""

    def __init__(self) -> None:
        super().__init__(CollectorRegistry())
        self.calls: list[tuple[str, int]] = []

    def request(self, route: str, code: int) -> None:
        super().request(route, code)
        self.calls.append((route, code))

    def exposed_text(self) -> str:
        """Every metric name, label and value the registry exposes, as one string."""
        parts = []
        for family in self.registry.collect():
            for sample in family.samples:
                parts.append(f"{sample.name}{sample.labels}{sample.value}")
        return "\n".join(parts)


@dataclass
class Endpoint:
    store: ObservedStore
    port: int
    metrics: RecordingMetrics
    task: asyncio.Task[None] | None = None
    """The ``serve_endpoint`` task; cancelling it stops the endpoint."""
    refreshes: list[int] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @staticmethod
    def auth(**extra: str) -> dict[str, str]:
        return {TOKEN_HEADER: TOKEN, **extra}


@contextlib.asynccontextmanager
async def running_endpoint(
    *,
    max_wait: float = 60.0,
    audit: bool = True,
    max_connections: int = 64,
    idle_timeout: float = 15.0,
    ping_interval: float = 15.0,
    refresh: Callable[[], float | None] | None = None,
    initial: Snapshot = INITIAL,
    customize: Callable[[web.Application], None] | None = None,
    allowed_hosts: Sequence[str] = (),
    specs: Sequence[SecretSpec] = SPECS,
    files: Iterable[str] | None = None,
) -> AsyncIterator[Endpoint]:
    """``customize`` gets the application before it is served (a test's extra hook or route); ``files``
    are the configured file paths (default: the app's own, from ``specs``)."""
    store = ObservedStore(specs)
    await store.publish(initial)
    metrics = RecordingMetrics()
    endpoint = Endpoint(store=store, port=0, metrics=metrics)
    app = build_endpoint_app(
        store=store,
        token=TOKEN,
        refresh=refresh or (lambda: endpoint.refreshes.append(1)),
        audit=audit,
        max_wait=max_wait,
        metrics=metrics,
        ping_interval=ping_interval,
        **({"allowed_hosts": allowed_hosts} if allowed_hosts else {}),  # only when set: an older app has none
        **({"files": files} if files is not None else {}),
    )
    if customize is not None:
        customize(app)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_endpoint(
            app,
            "127.0.0.1",
            0,
            max_connections=max_connections,
            started=bound.set_result,
            idle_timeout=idle_timeout,
        )
    )
    await asyncio.wait((bound, task), return_when=asyncio.FIRST_COMPLETED)
    if not bound.done():
        await task  # it ended before listening: raise its error
        raise AssertionError("serve_endpoint returned without listening")
    endpoint.port = bound.result()
    endpoint.task = task
    try:
        yield endpoint
    finally:
        await stop(task)


async def stop(task: asyncio.Task[None] | None, within: float = 10.0) -> None:
    """Cancel a server task and wait (bounded) for it to finish cleaning up."""
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, within)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with running_endpoint() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(port: int, data: bytes, within: float = 10.0) -> RawResponse:
    """Send ``data`` as is on a new connection; read the response until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_response(raw)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


def get(target: str, *headers: str) -> bytes:
    """A raw ``GET target`` with the token, ``Connection: close`` and ``headers`` (``"Name: value"``)."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", f"{TOKEN_HEADER}: {TOKEN}", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode("latin-1")


# -- connection floods ---------------------------------------------------------------------------------------


async def open_idle(
    port: int, count: int, partial: bool, path: str = "/v1/secrets/db"
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` connections that send nothing, or (every second one, with ``partial``) half a request."""
    connections = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if partial and i % 2:
            # Half a request, never finished: a slowloris.
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        connections.append((reader, writer))
    return connections


async def closed_by_server(
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], want: int, within: float = 10.0
) -> int:
    """How many of ``connections`` the server closed (EOF or reset), waiting ``within`` s for ``want``."""

    async def sees_close(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()

    pending = {asyncio.create_task(sees_close(reader)) for reader, _ in connections}
    closed = 0
    deadline = asyncio.get_running_loop().time() + within
    while pending and closed < want:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        closed += len(done)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return closed


def close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


# -- an endpoint in a thread of its own, for synchronous clients (schemathesis, requests) ---------------


@contextlib.contextmanager
def threaded_endpoint(
    *,
    max_wait: float = 0.05,
    specs: Sequence[SecretSpec] = SPECS,
    initial: Snapshot = INITIAL,
    files: Iterable[str] | None = None,
) -> Iterator[int]:
    """``running_endpoint`` on its own event loop in a thread; yields the port."""
    ready = threading.Event()
    port: list[int] = []
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    finished = threading.Event()
    stop_requested: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop_requested
        stop_requested = asyncio.Event()
        async with running_endpoint(max_wait=max_wait, specs=specs, initial=initial, files=files) as running:
            port.append(running.port)
            ready.set()
            await stop_requested.wait()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:
            failure.append(error)
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            finished.set()

    thread = threading.Thread(target=run, name="endpoint", daemon=True)
    thread.start()
    ready.wait(30)
    if failure or not port:
        raise AssertionError(f"the endpoint did not start: {failure!r}")
    try:
        yield port[0]
    finally:
        assert stop_requested is not None
        loop.call_soon_threadsafe(stop_requested.set)
        finished.wait(30)
        thread.join(30)
        if failure:
            raise failure[0]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog at DEBUG for every logger, so nothing the endpoint logs escapes the canary checks."""
    caplog.set_level(logging.DEBUG)
    return caplog
