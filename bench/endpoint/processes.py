"""The benchmark's side of its child processes: start a server pinned to its CPU and read its announcement,
run one load against it (``wrk``, or the fallback loader) and read the server's CPU time around it.

Pinning (``taskset``) keeps the load generator off the server's CPU, so that requests/s measures the
server alone; ``pinning_note`` says in the table whether it could.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.endpoint.settings import CONNECTIONS, LOAD_CPU, NAME, SERVER_CPU, STARTUP_TIMEOUT
from bench.run_footprint import cpu_seconds
from testing.emulator_process import stop_process

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
