"""The local endpoint under load: ``GET /v1/secrets/{name}`` throughput and latency, and 1,000 long-polls.

**Throughput.** Three servers, each a process of its own pinned to CPU 0, answer the same 64-byte value:

* the agent's endpoint (``build_endpoint_app`` + ``serve_endpoint``, as ``run`` wires it: token check,
  ``X-Forwarded-For`` check, metrics, JSON logs to stderr with the redaction filter, a 10-secret store), with
  the audit log on (the default: one JSON line per read, written to a file) and with it off;
* the baseline: a bare aiohttp handler on the same aiohttp version that returns the same bytes (no token,
  no headers of ours, no logging, no metrics).

The load generator runs on CPU 1 so it never takes the servers' CPU: ``wrk`` (Debian's package) with one
thread and 32 keep-alive connections, percentiles from a Lua ``done()`` hook; without ``wrk``, a lean
asyncio HTTP/1.1 loader in this module (raw protocols, same 32 connections, one request in flight on each).
Each server gets a short warm-up, then ``REPEATS`` interleaved runs (every server, then again); the table
shows medians and the ratio to the bare handler of the same run.

**Long-poll watchers.** The agent's endpoint (audit on, ``max_connections`` above 1,000) and a watcher
process on the other CPU holding 1,000 connections, each a ``?wait=60s`` request with ``If-None-Match`` of
the current ETag. Once all 1,000 requests are inside the endpoint's handler (counted by an innermost
middleware: a handler does not yield before its wait), a control listener inside the server process
publishes a new snapshot and notes the time (``CLOCK_MONOTONIC``, which both processes share); the watchers
note when each complete 200 arrives. Wake-up latency = arrival - publish. Memory: the server's ``VmRSS``
before the watchers connect and while all of them wait. ``WATCH_ROUNDS`` rotations in a row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run_footprint import cpu_seconds
from testing.emulator_process import stop_process

CONNECTIONS = 32
DURATION_SECONDS = 8
WARMUP_SECONDS = 2
REPEATS = 3
SECRETS = 10
VALUE_BYTES = 64
NAME = "bench-000"
"""The secret every request asks for."""
WATCHERS = 1000
WATCH_ROUNDS = 3
WATCH_WAIT = "60s"
WATCH_MAX_CONNECTIONS = WATCHERS + 64
"""``server.max_connections`` for the watcher run (the default, 128, is below 1,000)."""
SERVER_CPU, LOAD_CPU = 0, 1
RATIO_TARGET = 0.8
P99_TARGET_MS = 5.0
WAKE_TARGET_MS = 100.0
STARTUP_TIMEOUT = 30.0
WRK_INSTALL_HINT = "apt-get install -y wrk"

_WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "bad_status": %d, '
    .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def value_of(index: int, version: int) -> bytes:
    return f"value-{index:03d}-v{version}-".encode().ljust(VALUE_BYTES, b"x")


# --------------------------------------------------------------------------------------------------
# The server process: `python -m bench.endpoint serve ...`
# --------------------------------------------------------------------------------------------------


async def _serve(kind: str, audit: bool, token: str, max_connections: int, count_requests: bool) -> None:
    from aiohttp import web

    if kind == "bare":
        body = value_of(0, 1)

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/octet-stream")

        bare = web.Application()
        bare.router.add_get("/v1/secrets/{name}", handler)
        runner = web.AppRunner(bare, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        _announce({"port": runner.addresses[0][1]})
        await asyncio.Event().wait()
        return

    # Imported here: the bare server must not pay for (or be slowed by) anything of the agent's.
    from agent.config import ServerConfig, load_config
    from agent.core.model import Fetched, Snapshot, crc32c
    from agent.core.store import SnapshotStore
    from agent.endpoint.server import build_endpoint_app, etag_of, serve_endpoint
    from agent.observe.logs import configure_logging, register_served_values
    from agent.observe.metrics import Metrics

    configure_logging("info", "json")  # as `run` does: JSON lines to stderr, redaction on
    names = [f"bench-{i:03d}" for i in range(SECRETS)]
    config = load_config(None, {}, {"project": "bench-project", "secrets": [f"{n}={n}" for n in names]})
    store = SnapshotStore(config.secrets)
    items = [Fetched(n, "1", value_of(i, 1), crc32c(value_of(i, 1))) for i, n in enumerate(names)]
    first = Snapshot({item.name: item for item in items})
    register_served_values(item.data for item in first)  # what `run` does with every snapshot it serves
    await store.publish(first)
    metrics = Metrics(store=store, max_staleness=config.max_staleness)
    app = build_endpoint_app(
        store=store,
        token=token,
        refresh=lambda: None,
        audit=audit,
        max_wait=ServerConfig().max_wait,
        metrics=metrics,
    )
    # Innermost middleware: a handler runs from here to its first suspension point, the long-poll's wait,
    # without yielding, so once the control listener sees N in flight, N requests are waiting.
    in_flight = 0

    @web.middleware
    async def count_in_flight(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal in_flight
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    if count_requests:  # only for the watcher run: it costs the throughput run a little
        app.middlewares.append(count_in_flight)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    endpoint = asyncio.create_task(
        serve_endpoint(app, "127.0.0.1", 0, max_connections=max_connections, started=bound.set_result)
    )
    port = await asyncio.wait_for(asyncio.shield(bound), STARTUP_TIMEOUT)

    # The control listener: the benchmark's hands inside the server process (not part of the endpoint).
    async def waiting(request: web.Request) -> web.Response:
        return web.json_response({"waiting": in_flight})

    async def publish(request: web.Request) -> web.Response:
        current = store.snapshot.get(NAME)
        assert current is not None
        version = int(current.version) + 1
        data = value_of(0, version)
        rotated = Fetched(NAME, str(version), data, crc32c(data))
        snapshot = store.snapshot.with_updates([rotated])
        register_served_values(item.data for item in snapshot)
        published_at = time.monotonic()
        await store.publish(snapshot)
        return web.json_response({"published_at": published_at, "etag": etag_of(rotated)})

    control = web.Application()
    control.router.add_get("/waiting", waiting)
    control.router.add_post("/publish", publish)
    runner = web.AppRunner(control, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    current = store.snapshot.get(NAME)
    assert current is not None
    _announce({"port": port, "control": runner.addresses[0][1], "etag": etag_of(current)})
    await endpoint


def _announce(ready: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# A lean HTTP/1.1 client (the fallback load generator and the watchers)
# --------------------------------------------------------------------------------------------------

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


async def _load(host: str, port: int, path: str, token: str, connections: int, duration: float) -> None:
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
    _announce(
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


async def _watch(host: str, port: int, token: str, etag: str, watchers: int, rounds: int) -> None:
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
        _announce({"sent": round_number})
        await asyncio.wait_for(all_in, 90)
        _announce({"round": round_number, "arrivals": arrivals, "statuses": statuses, "etags": etags})
        etag = etags.most_common(1)[0][0]
        arrivals, statuses, etags = [], Counter(), Counter()
        all_in = loop.create_future()
    for connection in pool:
        assert connection.transport is not None
        connection.transport.close()


# --------------------------------------------------------------------------------------------------
# The benchmark's side: processes, readings
# --------------------------------------------------------------------------------------------------


class LineReader:
    """JSON lines from a child's stdout, each awaited with a deadline (the child may hang or die)."""

    def __init__(self, process: subprocess.Popen[bytes], title: str) -> None:
        assert process.stdout is not None
        self.process, self.title = process, title
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.title}: no answer within {timeout:.0f} s")
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if readable:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"{self.title} exited with {self.process.wait()}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return dict(json.loads(line))


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` bound to one CPU (``taskset``) when the machine has two or more, else unchanged."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def pinning_note() -> str:
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return "not pinned (one CPU, or no taskset): servers and load share the CPU"
    return f"servers on CPU {SERVER_CPU}, load generator on CPU {LOAD_CPU} (taskset)"


@dataclass
class Server:
    title: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    control: int | None
    etag: str | None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.control}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))


@contextmanager
def child(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    try:
        yield process
    finally:
        stop_process(process, grace=10)
        assert process.stdout is not None
        process.stdout.close()


@contextmanager
def server(
    title: str,
    kind: str,
    audit: bool,
    token: str,
    work: Path,
    max_connections: int = 128,
    count: bool = False,
) -> Iterator[Server]:
    log = work / f"{title.replace(' ', '-').replace(',', '')}.log"
    argv = [sys.executable, "-m", "bench.endpoint", "serve", "--kind", kind, "--token", token]
    argv += ["--max-connections", str(max_connections)] + ([] if audit else ["--no-audit"])
    argv += ["--count-requests"] if count else []
    with child(pinned(SERVER_CPU, argv), log) as process:
        ready = LineReader(process, title).next(STARTUP_TIMEOUT)
        yield Server(title, process, log, ready["port"], ready.get("control"), ready.get("etag"))


@dataclass(frozen=True)
class Load:
    """One load run: requests per second and latency percentiles (ms)."""

    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us: float
    """The server's CPU time per request (µs): unlike requests/s, not lowered when something else on the
    machine takes the server's CPU for a while."""


def run_load(target: Server, token: str, seconds: float, work: Path) -> Load:
    path = f"/v1/secrets/{NAME}"
    wrk = shutil.which("wrk")
    if wrk is not None:
        script = work / "report.lua"
        script.write_text(_WRK_SCRIPT)
        argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "-s", str(script)]
        argv += ["-H", f"X-Secrets-Agent-Token: {token}", f"http://127.0.0.1:{target.port}{path}"]
    else:
        argv = [sys.executable, "-m", "bench.endpoint", "load", "--port", str(target.port), "--path", path]
        argv += ["--token", token, "--connections", str(CONNECTIONS), "--duration", f"{seconds:g}"]
    cpu_before = cpu_seconds(target.process.pid)
    out = subprocess.run(pinned(LOAD_CPU, argv), capture_output=True, check=True, timeout=seconds + 60)
    cpu = cpu_seconds(target.process.pid) - cpu_before
    lines = [line for line in out.stdout.decode().splitlines() if line.startswith('{"requests"')]
    if not lines:
        raise RuntimeError(f"the load generator printed no report: {out.stdout!r} {out.stderr!r}")
    report = json.loads(lines[-1])
    if report["socket_errors"] or report["bad_status"] or not report["requests"]:
        raise RuntimeError(f"{target.title}: failed requests under load: {report}")
    return Load(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        cpu_us=cpu / report["requests"] * 1e6,
    )


# --------------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------------

AUDIT_ON = "agent endpoint, audit log on (default)"
AUDIT_OFF = "agent endpoint, audit log off"
BARE = "bare aiohttp handler (baseline)"


@dataclass(frozen=True)
class Throughput:
    generator: str
    rows: dict[str, Load]
    """Title -> median of the runs."""

    def ratio(self, title: str) -> float:
        """Requests/s of ``title`` over the bare handler's: what the target is about."""
        return self.rows[title].rps / self.rows[BARE].rps

    def cpu_ratio(self, title: str) -> float:
        """The bare handler's CPU per request over ``title``'s: the same ratio, robust to other load."""
        return self.rows[BARE].cpu_us / self.rows[title].cpu_us


def measure_throughput(work: Path) -> Throughput:
    token = secrets.token_urlsafe(32)
    with ExitStack() as stack:
        servers = [
            stack.enter_context(server(AUDIT_ON, "agent", True, token, work)),
            stack.enter_context(server(AUDIT_OFF, "agent", False, token, work)),
            stack.enter_context(server(BARE, "bare", False, token, work)),
        ]
        for target in servers:
            run_load(target, token, WARMUP_SECONDS, work)
        runs: dict[str, list[Load]] = {s.title: [] for s in servers}
        for _ in range(REPEATS):
            for target in servers:  # interleaved: a burst of noise hits every server alike
                runs[target.title].append(run_load(target, token, DURATION_SECONDS, work))
        # Each row must measure what its title says.
        if "secret read" not in servers[0].log.read_text():
            raise RuntimeError("the audit-on server wrote no audit lines")
        if "secret read" in servers[1].log.read_text():
            raise RuntimeError("the audit-off server wrote audit lines")
    rows = {
        title: Load(
            rps=statistics.median(r.rps for r in loads),
            p50_ms=statistics.median(r.p50_ms for r in loads),
            p99_ms=statistics.median(r.p99_ms for r in loads),
            max_ms=max(r.max_ms for r in loads),
            cpu_us=statistics.median(r.cpu_us for r in loads),
        )
        for title, loads in runs.items()
    }
    generator = "wrk" if shutil.which("wrk") else "bench.endpoint's asyncio loader (wrk not installed)"
    return Throughput(generator, rows)


@dataclass(frozen=True)
class WatchRound:
    woken: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Watchers:
    rss_before_kib: int
    rss_waiting_kib: int
    rounds: list[WatchRound]

    @property
    def per_watcher_kib(self) -> float:
        return (self.rss_waiting_kib - self.rss_before_kib) / WATCHERS

    @property
    def worst_max_ms(self) -> float:
        return max(r.max_ms for r in self.rounds)


def _all_waiting(target: Server, deadline: float) -> None:
    while target.call("GET", "/waiting")["waiting"] < WATCHERS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {target.call('GET', '/waiting')['waiting']} watchers are waiting")
        time.sleep(0.02)


def measure_watchers(work: Path) -> Watchers:
    token = secrets.token_urlsafe(32)
    title = f"agent endpoint, {WATCHERS} watchers"
    with server(title, "agent", True, token, work, WATCH_MAX_CONNECTIONS, count=True) as target:
        for _ in range(50):  # warm up: imports, routes, logging, metrics all touched once
            request = urllib.request.Request(f"http://127.0.0.1:{target.port}/v1/secrets/{NAME}")
            request.add_header("X-Secrets-Agent-Token", token)
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        rss_before = target.rss_kib()
        argv = [sys.executable, "-m", "bench.endpoint", "watch", "--port", str(target.port)]
        argv += ["--token", token, "--etag", str(target.etag), "--watchers", str(WATCHERS)]
        argv += ["--rounds", str(WATCH_ROUNDS)]
        rounds: list[WatchRound] = []
        rss_waiting = 0
        with child(pinned(LOAD_CPU, argv), work / "watchers.log") as process:
            lines = LineReader(process, "the watcher process")
            for round_number in range(WATCH_ROUNDS):
                lines.next(60)  # {"sent": n}
                _all_waiting(target, time.monotonic() + 60)
                rss_waiting = max(rss_waiting, target.rss_kib())
                published = target.call("POST", "/publish")
                report = lines.next(120)
                if report["statuses"] != {"200": WATCHERS} or report["etags"] != {
                    published["etag"]: WATCHERS
                }:
                    raise RuntimeError(f"round {round_number}: {report['statuses']} {report['etags']}")
                latencies = sorted((t - published["published_at"]) * 1000 for t in report["arrivals"])
                rounds.append(
                    WatchRound(
                        len(latencies),
                        percentile(latencies, 0.5),
                        percentile(latencies, 0.99),
                        latencies[-1],
                    )
                )
            process.wait(30)
    return Watchers(rss_before, rss_waiting, rounds)


@dataclass(frozen=True)
class Result:
    throughput: Throughput
    watchers: Watchers

    @property
    def audit_on_ratio(self) -> float:
        return self.throughput.ratio(AUDIT_ON)

    @property
    def audit_off_ratio(self) -> float:
        return self.throughput.ratio(AUDIT_OFF)


def measure() -> Result:
    if shutil.which("wrk") is None:
        print(
            f"\nwrk not found: using bench.endpoint's asyncio load generator instead "
            f"(for wrk's figures: `{WRK_INSTALL_HINT}` as root)"
        )
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-", dir=shm if shm.is_dir() else None) as tmp:
        work = Path(tmp)
        return Result(measure_throughput(work), measure_watchers(work))


def print_tables(result: Result) -> None:
    t = result.throughput
    print(
        f"\nLocal endpoint: GET /v1/secrets/{{name}} ({VALUE_BYTES}-byte value), {CONNECTIONS} keep-alive "
        f"connections, {t.generator}; median of {REPEATS} interleaved {DURATION_SECONDS} s runs; "
        f"{pinning_note()}"
    )
    print("| server | requests/s | vs bare | p50 ms | p99 ms | max ms | server CPU µs/request | vs bare |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, row in t.rows.items():
        print(
            f"| {title} | {row.rps:,.0f} | {t.ratio(title):.2f}x | {row.p50_ms:.2f} | {row.p99_ms:.2f} "
            f"| {row.max_ms:.1f} | {row.cpu_us:.1f} | {t.cpu_ratio(title):.2f}x |"
        )
    w = result.watchers
    print(
        f"\n{WATCHERS} long-poll watchers (?wait={WATCH_WAIT}, If-None-Match) on the agent endpoint, audit "
        f"on: wake-up latency from the snapshot's publish to each watcher's complete 200 (ms)"
    )
    print("| rotation | woken | p50 ms | p99 ms | max (all woken) ms |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for number, row in enumerate(w.rounds, 1):
        print(f"| {number} | {row.woken} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.max_ms:.1f} |")
    print(
        f"Server VmRSS: {w.rss_before_kib / 1024:.1f} MiB before the watchers, "
        f"{w.rss_waiting_kib / 1024:.1f} MiB with {WATCHERS} waiting: "
        f"{w.per_watcher_kib:.1f} KiB per watcher"
    )


def main() -> Result:
    result = measure()
    print_tables(result)
    return result


def _cli(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.endpoint")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="a server process (used by the benchmark)")
    serve.add_argument("--kind", choices=("agent", "bare"), required=True)
    serve.add_argument("--no-audit", action="store_true")
    serve.add_argument("--token", required=True)
    serve.add_argument("--max-connections", type=int, default=128)
    serve.add_argument("--count-requests", action="store_true", help="count requests in the handler")
    load = sub.add_parser("load", help="the fallback load generator (used when wrk is absent)")
    watch = sub.add_parser("watch", help="the long-poll watchers (used by the benchmark)")
    for client in (load, watch):
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--token", required=True)
    load.add_argument("--path", required=True)
    load.add_argument("--connections", type=int, default=CONNECTIONS)
    load.add_argument("--duration", type=float, default=DURATION_SECONDS)
    watch.add_argument("--etag", required=True)
    watch.add_argument("--watchers", type=int, default=WATCHERS)
    watch.add_argument("--rounds", type=int, default=WATCH_ROUNDS)
    args = parser.parse_args(argv)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(
            _serve(args.kind, not args.no_audit, args.token, args.max_connections, args.count_requests)
        )
    elif args.command == "load":
        asyncio.run(_load("127.0.0.1", args.port, args.path, args.token, args.connections, args.duration))
    elif args.command == "watch":
        asyncio.run(_watch("127.0.0.1", args.port, args.token, args.etag, args.watchers, args.rounds))
    else:
        main()


if __name__ == "__main__":
    _cli(sys.argv[1:])
