"""The probes listener (0.0.0.0 by default, no token) has the defences of every listener: a connection cap
that evicts idle sockets, an idle and header timeout, a request timeout, a ``Host`` check against DNS
rebinding, and logs that cannot flood when the process runs out of file descriptors.

In-process tests serve the real probes application on 127.0.0.1 port 0; the file-descriptor tests run real
child processes under a low ``RLIMIT_NOFILE``: the agent itself (``python -m agent dev``), and a small
program serving the probes that uses up its own descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from agent.endpoint.token import TOKEN_HEADER
from agent.observe.probes import build_probes_app, serve_probes
from tests.endpoint.conftest import close_all, closed_by_server, open_idle, raw_request

CANARY = "canary-probe-limits-7e1d-if-you-read-this-it-leaked"


@contextlib.asynccontextmanager
async def probes(
    *, max_connections: int = 32, idle_timeout: float = 600, allowed_hosts: Sequence[str] = ()
) -> AsyncIterator[int]:
    """The probes listener on 127.0.0.1:0 (always ready and alive); yields its port."""
    app = build_probes_app(registry=CollectorRegistry(), ready=lambda: [], alive=lambda: [])
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_probes(
            app,
            "127.0.0.1",
            0,
            started=bound.set_result,
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            allowed_hosts=allowed_hosts,
        )
    )
    try:
        async with asyncio.timeout(10):
            yield await asyncio.shield(bound)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def probe(path: str, host: str | None = "127.0.0.1", version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Connection: close"]
    if host is not None:
        lines.append(f"Host: {host}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- connections ------------------------------------------------------------------------------------------


async def test_a_thousand_idle_connections_do_not_starve_the_kubelet() -> None:
    limit = 20
    async with probes(max_connections=limit) as port:  # idle timeout far longer than the test
        flood = await open_idle(port, 1000, partial=True, path="/metrics")
        try:
            async with asyncio.timeout(20):
                response = await raw_request(port, probe("/healthz"))
            assert response.status == 200
            assert response.json() == {"status": "ok"}
            # The cap is real: the listener let go of all but `limit` of the flood's sockets.
            assert await closed_by_server(flood, 1000 - limit) >= 1000 - limit
        finally:
            close_all(flood)


async def test_idle_and_half_sent_connections_are_closed_after_the_idle_timeout() -> None:
    async with probes(idle_timeout=0.3) as port:
        idle = await open_idle(port, 6, partial=True, path="/metrics")
        try:
            assert await closed_by_server(idle, 6) == 6
        finally:
            close_all(idle)


# -- Host ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["10.12.0.7:8731", "10.12.0.7", "[fd00::7]:8731", "127.0.0.1:8731", "localhost:8731", None]
)
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_ip_literals_and_localhost_are_answered(host: str | None, path: str) -> None:
    async with probes() as port:
        # No Host at all: HTTP/1.0, as some health checkers send it (a browser never does).
        response = await raw_request(port, probe(path, host, "1.0" if host is None else "1.1"))
    assert response.status == 200


@pytest.mark.parametrize(
    "host", ["rebind.attacker.example", "rebind.attacker.example:8731", "10.1.2.3.nip.io"]
)
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/nothing"])
async def test_other_dns_names_are_refused(host: str, path: str) -> None:
    async with probes() as port:
        response = await raw_request(port, probe(path, host))
    assert response.status == 421
    assert response.json() == {
        "error": "the Host header must be an IP address, localhost or a name in probes.allowed_hosts"
    }
    assert b"secrets_agent" not in response.body


async def test_configured_names_are_answered() -> None:
    async with probes(allowed_hosts=["agent-metrics.monitoring.svc"]) as port:
        assert (await raw_request(port, probe("/metrics", "Agent-Metrics.monitoring.svc:8731"))).status == 200
        assert (await raw_request(port, probe("/metrics", "other.monitoring.svc"))).status == 421


async def test_a_request_whose_body_never_finishes_gets_408() -> None:
    app = build_probes_app(registry=CollectorRegistry(), ready=lambda: [], alive=lambda: [])
    seen = asyncio.Event()

    async def echo(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        seen.set()
        return aiohttp.web.Response(body=await request.read())

    app.router.add_post("/echo", echo)  # a route that reads its body, which the probes do not have
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_probes(app, "127.0.0.1", 0, started=bound.set_result, request_timeout=0.3)
    )
    try:
        port = await asyncio.wait_for(asyncio.shield(bound), 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nhalf")
        await asyncio.wait_for(seen.wait(), 10)
        head = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b'{"error": "request took too long"}' in head
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- real processes under a low file-descriptor limit ------------------------------------------------------

FD_LIMIT = 256


def low_fd_limit() -> None:
    """``preexec_fn`` of the children: the limit the issue reproduced the flood under."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def child_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SECRETS_AGENT_")}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["SECRETS_AGENT_SERVER_LISTEN"] = "127.0.0.1:0"
    env["SECRETS_AGENT_PROBES_LISTEN"] = "127.0.0.1:0"
    return env


def eventually(condition: Callable[[], object], within: float, what: str, explain: Callable[[], str]) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}\n{explain()}")
        time.sleep(0.01)


def http_get(port: int, path: str, headers: dict[str, str] | None = None, within: float = 10.0) -> bytes:
    """One raw request on a new socket; the whole response (until the server closes)."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def stopped_at_the_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def test_an_agent_under_a_256_fd_limit_survives_368_half_open_probe_connections(
    tmp_path: Path, stopped_at_the_end: list[subprocess.Popen[bytes]]
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DB_PASSWORD={CANARY}\n")
    output = tmp_path / "out"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"output_dir: {output}\nsecrets:\n"
        "  - name: db-password\n    ref: projects/probe-limits/secrets/db-password\n"
    )
    stderr = tmp_path / "agent.stderr"
    with open(stderr, "wb") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "dev", "-c", str(config), "--dotenv", str(dotenv)],
            stdout=err,
            stderr=err,
            env=child_environment(),
            preexec_fn=low_fd_limit,  # only setrlimit: safe before exec
        )
    stopped_at_the_end.append(agent)

    def log() -> str:
        return stderr.read_text(errors="replace")

    ports: dict[str, int] = {}

    def listening() -> bool:
        for match in re.finditer(
            r"(probes|local endpoint) listening on (?:http://)?127\.0\.0\.1:(\d+)", log()
        ):
            ports[match[1]] = int(match[2])
        return len(ports) == 2 and (output / ".token").exists() and agent.poll() is None

    eventually(listening, 20, "both listeners and the token", log)
    lines_before = len(log().splitlines())

    flood = []
    try:
        for _ in range(368):  # what exhausted 256 descriptors before
            sock = socket.create_connection(("127.0.0.1", ports["probes"]), timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end of the headers
            flood.append(sock)
        # The kubelet's probe, the app's read and a snapshot write all still work.
        assert http_get(ports["probes"], "/healthz").startswith(b"HTTP/1.1 200 ")
        token = (output / ".token").read_text().strip()
        read = http_get(ports["local endpoint"], "/v1/secrets/db-password", {TOKEN_HEADER: token})
        assert read.startswith(b"HTTP/1.1 200 ")
        assert read.endswith(CANARY.encode())
        dotenv.write_text("DB_PASSWORD=second-value\n")
        eventually(
            lambda: (output / "db-password").read_bytes() == b"second-value", 10, "the edit on disk", log
        )
    finally:
        for sock in flood:
            sock.close()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    text = log()
    assert CANARY not in text
    assert "out of system resource" not in text
    assert "Too many open files" not in text
    new_lines = text.splitlines()[lines_before:]
    assert len(new_lines) < 30, "\n".join(new_lines[:20])


SERVING_CHILD = """
import asyncio, os, sys
from prometheus_client import CollectorRegistry
from agent.observe.logs import configure_logging
from agent.observe.probes import build_probes_app, serve_probes

configure_logging("INFO", "json")

async def main():
    app = build_probes_app(registry=CollectorRegistry(), ready=lambda: [], alive=lambda: [])
    hog = []
    loop = asyncio.get_running_loop()
    released = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), released.set)

    def started(port):
        try:
            while True:  # what a descriptor leak elsewhere in the process would do
                hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        print(f"EXHAUSTED {port}", flush=True)

    serving = asyncio.create_task(serve_probes(app, "127.0.0.1", 0, started=started))
    await released.wait()
    loop.remove_reader(sys.stdin.fileno())
    for fd in hog:
        os.close(fd)
    print("RELEASED", flush=True)
    await asyncio.sleep(3600)  # until SIGTERM

asyncio.run(main())
"""


def test_running_out_of_descriptors_logs_one_line_per_burst_and_recovers(
    tmp_path: Path, stopped_at_the_end: list[subprocess.Popen[bytes]]
) -> None:
    stderr = tmp_path / "child.stderr"
    with open(stderr, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", SERVING_CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=child_environment(),
            preexec_fn=low_fd_limit,  # only setrlimit: safe before exec
        )
    stopped_at_the_end.append(child)
    assert child.stdout is not None
    assert child.stdin is not None

    def log() -> str:
        return stderr.read_text(errors="replace")

    line = child.stdout.readline().decode()
    assert line.startswith("EXHAUSTED "), line + log()
    port = int(line.split()[1])
    # Twenty clients: the kernel queues them in the backlog; the child cannot accept any of them.
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        eventually(
            lambda: "cannot accept" in log() or "out of system resource" in log(),
            10,
            "the child to say it cannot accept",
            log,
        )
        child.stdin.write(b"release\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"RELEASED\n"
        for client in clients:  # every queued client is served once descriptors are free again
            response = b""
            while chunk := client.recv(65536):
                response += chunk
            assert response.startswith(b"HTTP/1.1 200 "), response
    finally:
        for client in clients:
            client.close()
    child.send_signal(signal.SIGTERM)
    child.wait(15)
    records = [json.loads(line) for line in log().splitlines() if line.startswith("{")]
    about_accepting = [
        r["message"] for r in records if "accept" in r["message"] or "resource" in r["message"]
    ]
    # One line when it started, at most one per 10 s while it lasted, one with the count when it ended.
    assert 2 <= len(about_accepting) <= 4, about_accepting
    assert "cannot accept connections: out of file descriptors" in about_accepting[0]
    assert re.search(r"accepting connections again; \d+ more accepts had failed", about_accepting[-1])
    assert "Traceback" not in log()
