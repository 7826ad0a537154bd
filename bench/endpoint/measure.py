"""The endpoint's two measurements: throughput (three servers, interleaved runs, medians) and the long-poll
watchers (1,000 waiting requests woken by one rotation, and the server's memory while they wait).

``measure`` runs both in one tmpfs directory and returns the ``Result`` that ``report`` prints and
``python -m bench`` judges against the targets in ``settings``.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import sys
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.common import shm_tmpdir
from bench.endpoint.client import percentile
from bench.endpoint.processes import LineReader, Load, Server, child, pinned, run_load, server
from bench.endpoint.settings import (
    DURATION_SECONDS,
    LOAD_CPU,
    NAME,
    REPEATS,
    WARMUP_SECONDS,
    WATCH_MAX_CONNECTIONS,
    WATCH_ROUNDS,
    WATCHERS,
    WRK_INSTALL_HINT,
)

AUDIT_ON = "agent endpoint, audit log on (default)"
AUDIT_OFF = "agent endpoint, audit log off"
BARE = "bare aiohttp handler (baseline)"


@dataclass(frozen=True)
class Spread:
    """One figure over the interleaved runs: median, min and max."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"


@dataclass(frozen=True)
class Throughput:
    generator: str
    rows: dict[str, Load]
    """Title -> median of the runs."""
    runs: dict[str, list[Load]]
    """Title -> every run, in round order (round i of every server ran back to back)."""

    def rps_ratios(self, title: str) -> Spread:
        """Requests/s of ``title`` over the bare handler's of the same round: what the target is about."""
        return Spread.of([r.rps / b.rps for r, b in zip(self.runs[title], self.runs[BARE], strict=True)])

    def cpu_ratios(self, title: str) -> Spread:
        """CPU per request of ``title`` over the bare handler's of the same round: the same question, less
        moved by whatever else takes the machine's CPUs for a while."""
        return Spread.of(
            [r.cpu_us / b.cpu_us for r, b in zip(self.runs[title], self.runs[BARE], strict=True)]
        )

    def p99s(self, title: str) -> Spread:
        return Spread.of([r.p99_ms for r in self.runs[title]])

    def ratio(self, title: str) -> float:
        """The median of ``rps_ratios``."""
        return self.rps_ratios(title).median

    def cpu_ratio(self, title: str) -> float:
        """The median of ``cpu_ratios`` (above 1: more CPU per request than the bare handler)."""
        return self.cpu_ratios(title).median


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
    return Throughput(generator, rows, runs)


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
    with shm_tmpdir("bench-endpoint-") as work:
        return Result(measure_throughput(work), measure_watchers(work))
