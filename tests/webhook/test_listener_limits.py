"""The webhook's HTTPS listener has the defences of every listener (``agent.core.serving``): handshakes
bounded in time, idle connections evicted at the cap and closed after the idle timeout, a body sent too
slowly answered 408. Real TLS connections on 127.0.0.1 (trustme certificates)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import pytest

from agent.webhook.server import build_app, serve
from agent.webhook.settings import InjectorSettings
from agent.webhook.tls import ReloadingCertificate
from tests.endpoint.conftest import close_all, closed_by_server
from tests.webhook.conftest import SERVICE_NAME, Tls

Connections = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


@contextlib.asynccontextmanager
async def listener(
    tls: Tls, *, max_connections: int = 256, idle_timeout: float = 600, request_timeout: float = 30
) -> AsyncIterator[int]:
    certificate = ReloadingCertificate(tls.cert_file, tls.key_file)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            build_app(InjectorSettings()),
            "127.0.0.1",
            0,
            certificate,
            started=bound.set_result,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            request_timeout=request_timeout,
        )
    )
    try:
        yield await asyncio.wait_for(asyncio.shield(bound), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def tls_connections(port: int, count: int, context: ssl.SSLContext) -> Connections:
    return [
        await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=SERVICE_NAME)
        for _ in range(count)
    ]


async def healthz(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=SERVICE_NAME
    )
    try:
        writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: " + SERVICE_NAME.encode() + b"\r\nConnection: close\r\n\r\n"
        )
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def test_connections_that_never_finish_the_handshake_are_closed(tls: Tls) -> None:
    async with listener(tls, idle_timeout=0.3) as port:
        raw = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]  # TCP only, no TLS
        try:
            assert await closed_by_server(raw, 10) == 10
        finally:
            close_all(raw)
        assert (await healthz(port, tls.client_context())).startswith(b"HTTP/1.1 200 ")


async def test_idle_tls_connections_are_closed_after_the_idle_timeout(tls: Tls) -> None:
    async with listener(tls, idle_timeout=0.3) as port:
        idle = await tls_connections(port, 5, tls.client_context())
        try:
            assert await closed_by_server(idle, 5) == 5
        finally:
            close_all(idle)


async def test_a_flood_of_idle_tls_connections_does_not_starve_the_api_server(tls: Tls) -> None:
    limit = 10
    async with listener(tls, max_connections=limit) as port:
        flood = await tls_connections(port, 60, tls.client_context())
        try:
            assert (await healthz(port, tls.client_context())).startswith(b"HTTP/1.1 200 ")
            assert await closed_by_server(flood, 60 - limit) >= 60 - limit
        finally:
            close_all(flood)


@pytest.mark.parametrize("sent", [b"", b'{"kind": "AdmissionReview"'])
async def test_a_review_whose_body_never_arrives_gets_408(tls: Tls, sent: bytes) -> None:
    async with listener(tls, request_timeout=0.3) as port:
        [(reader, writer)] = await tls_connections(port, 1, tls.client_context())
        try:
            writer.write(
                b"POST /mutate HTTP/1.1\r\nHost: " + SERVICE_NAME.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n" + sent
            )
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            close_all([(reader, writer)])
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b'{"error": "request took too long"}')
