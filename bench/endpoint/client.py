"""A lean HTTP/1.1 client on raw asyncio protocols: the fallback load generator (``python -m bench.endpoint
load``, when ``wrk`` is not installed) and the long-poll watchers (``python -m bench.endpoint watch``).

Both run as processes of their own on the other CPU and report one JSON line per result (the load: wrk's
report, the same keys as the Lua ``done()`` hook prints; the watchers: the arrival time of every 200).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence

from bench.endpoint.settings import NAME, WATCH_WAIT, announce

_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")
_ETAG = re.compile(rb'(?im)^etag:[ \t]*("[^"\r\n]*")')


def request_bytes(path: str, token: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Secrets-Agent-Token: {token}\r\n{extra}\r\n".encode()


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; ``on_response(status, head, body)`` for every complete response. The
    servers measured here always send Content-Length, so that is all this parser supports."""

    def __init__(self, on_response: Callable[[HttpConnection, int, bytes, bytes], None]) -> None:
        self.on_response = on_response
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.on_response(self, int(head[9:12]), head, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def open_connections(
    host: str, port: int, count: int, on_response: Callable[[HttpConnection, int, bytes, bytes], None]
) -> list[HttpConnection]:
    loop = asyncio.get_running_loop()
    connections: list[HttpConnection] = []
    # In batches: the endpoint's listen backlog is 512, and 1,000 SYNs at once would overflow it.
    for start in range(0, count, 100):
        batch = await asyncio.gather(
            *(
                loop.create_connection(lambda: HttpConnection(on_response), host, port)
                for _ in range(min(100, count - start))
            )
        )
        connections += [protocol for _, protocol in batch]
    return connections


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


async def load(host: str, port: int, path: str, token: str, connections: int, duration: float) -> None:
    """Keep one request in flight on each of ``connections`` for ``duration`` s; print wrk's JSON line."""
    request = request_bytes(path, token)
    latencies: list[int] = []
    started_at: dict[HttpConnection, int] = {}
    statuses: Counter[int] = Counter()
    stop_at = time.monotonic() + duration
    running = True

    def on_response(connection: HttpConnection, status: int, head: bytes, body: bytes) -> None:
        now = time.perf_counter_ns()
        latencies.append(now - started_at[connection])
        statuses[status] += 1
        if running:
            started_at[connection] = time.perf_counter_ns()
            connection.send(request)

    pool = await open_connections(host, port, connections, on_response)
    began = time.perf_counter_ns()
    for connection in pool:
        started_at[connection] = time.perf_counter_ns()
        connection.send(request)
    await asyncio.sleep(stop_at - time.monotonic())  # the load runs for this long; nothing to wait on
    running = False
    elapsed = time.perf_counter_ns() - began
    for connection in pool:
        assert connection.transport is not None
        connection.transport.close()
    ordered = sorted(latencies)
    announce(
        {
            "requests": len(ordered),
            "duration_us": elapsed // 1000,
            "socket_errors": 0,
            "bad_status": sum(n for status, n in statuses.items() if status >= 400),
            "p50_us": percentile(ordered, 0.50) // 1000,
            "p99_us": percentile(ordered, 0.99) // 1000,
            "max_us": ordered[-1] // 1000,
        }
    )


async def watch(host: str, port: int, token: str, etag: str, watchers: int, rounds: int) -> None:
    """``watchers`` long-polls; after each rotation print when every 200 arrived, then poll again."""
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    statuses: Counter[int] = Counter()
    etags: Counter[str] = Counter()
    all_in: asyncio.Future[None] = loop.create_future()

    def on_response(connection: HttpConnection, status: int, head: bytes, body: bytes) -> None:
        arrivals.append(time.monotonic())
        statuses[status] += 1
        match = _ETAG.search(head)
        etags[match.group(1).decode() if match else ""] += 1
        if len(arrivals) == watchers and not all_in.done():
            all_in.set_result(None)

    pool = await open_connections(host, port, watchers, on_response)
    for round_number in range(rounds):
        request = request_bytes(f"/v1/secrets/{NAME}?wait={WATCH_WAIT}", token, f"If-None-Match: {etag}\r\n")
        for connection in pool:
            connection.send(request)
        announce({"sent": round_number})
        await asyncio.wait_for(all_in, 90)
        announce({"round": round_number, "arrivals": arrivals, "statuses": statuses, "etags": etags})
        etag = etags.most_common(1)[0][0]
        arrivals, statuses, etags = [], Counter(), Counter()
        all_in = loop.create_future()
    for connection in pool:
        assert connection.transport is not None
        connection.transport.close()
