"""Bootstrap time (``init``): N secrets fetched and written, with the emulator adding 50 ms to every call.

The agent's real path: a Config built by ``load_config`` (as ``secrets-agent init --secret ...`` would, so
``concurrency`` is whatever its default is), then ``select_source`` (GcpSource, plaintext gRPC to the
emulator), ``build_sink`` (SnapshotSink on ``/dev/shm``) and ``Syncer.bootstrap`` from ``agent.app``. Timed:
from the first fetch (the channel is opened lazily, as in ``init``) to the snapshot written; interpreter
start-up and imports are not.

Columns, all against the same emulator in the same run:

* the agent at its default settings (the target: 50 secrets at most ``TARGET_RATIO`` x the time of 1);
* the agent with ``--concurrency 256`` (every size in one round);
* the agent's source alone (``GcpSource.fetch`` of every secret at once, no Syncer, no files): with the
  column above, it splits the agent's time into fetching and the rest (retry wrapper, bookkeeping, render
  and write of the snapshot, whose own time is printed under the table);
* the official asyncio client with every call in flight and no files (what the source builds on);
* bare grpc.aio calls (the floor of this machine and this emulator: the Python gRPC stack on both ends,
  2 cores shared);
* the baseline: a sequential loop over the official synchronous client, one AccessSecretVersion after the
  other, which is what berglas and secrets-init do (they fetch into the environment, so it writes no files).

Runs go round-robin (every column, every size, then again) so that load from elsewhere on the machine hits
all columns alike. Each figure is a ratio to the 1-secret time of its column **in the same round**; the
tables give the median of ``REPEATS`` rounds with the min-max. CPU time of this process (all its threads)
is given per extra secret too: on a shared machine it is steadier than wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
    SecretManagerServiceGrpcTransport,
)

from agent.app import build_renderer, build_sink, select_source, sync_settings
from agent.config import Config, load_config
from agent.core.model import Snapshot
from agent.core.store import SnapshotStore
from agent.sync import Syncer
from testing.emulator_process import emulator_process, write_seed

PROJECT = "bench-project"
SIZES = (1, 10, 50, 200)
REPEATS = 21
"""Rounds per column (one round: every size once); a round of the concurrent columns takes about a second."""
SEQUENTIAL_REPEATS = 5
"""The sequential loop takes 50 ms per secret (13 s per round): fewer rounds, and its spread is small."""
LATENCY_MS = 50


def _default_concurrency() -> int:
    default = next(f.default for f in dataclasses.fields(Config) if f.name == "concurrency")
    assert isinstance(default, int)
    return default


DEFAULT_CONCURRENCY = _default_concurrency()
"""``concurrency`` when nothing sets it: the first column runs with it (it does not pass the flag)."""
WIDE_CONCURRENCY = 256
"""A second agent column: ``--concurrency`` above every size, to show what the default bound costs."""
TARGET_SIZE, TARGET_RATIO = 50, 1.3
VALUE = b"v" * 32


def secret_id(index: int) -> str:
    return f"bench-{index:03d}"


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A directory on tmpfs (``/dev/shm``) when there is one, as the agent's output volume would be."""
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="bench-", dir=shm if shm.is_dir() else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def agent_config(target: str, output_dir: Path, count: int, concurrency: int | None) -> Config:
    """The configuration ``init --secret ...`` builds; ``concurrency`` None: its default."""
    flags: dict[str, object] = {
        "gcp.endpoint": target,
        "project": PROJECT,
        "output_dir": str(output_dir),
        "secrets": [f"{secret_id(i)}={secret_id(i)}" for i in range(count)],
    }
    if concurrency is not None:
        flags["concurrency"] = str(concurrency)
    return load_config(None, {}, flags)


@dataclass(frozen=True)
class Run:
    """One measured run: wall seconds, CPU seconds of this process (every thread) over the same span, the
    seconds rendering and writing the snapshot took (agent columns only), and the emulator's CPU seconds
    over the whole run (10 ms ticks: meaningful summed over rounds, not for one run)."""

    wall: float
    cpu: float
    write: float = 0.0
    service_cpu: float = 0.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def measured() -> Iterator[list[float]]:
    """Wall and CPU time of the block, appended to the list it yields as [wall, cpu]."""
    times: list[float] = []
    cpu, wall = time.process_time(), time.perf_counter()
    yield times
    times.extend((time.perf_counter() - wall, time.process_time() - cpu))


async def agent_bootstrap(config: Config) -> Run:
    """The agent's bootstrap of every secret in ``config`` (fetch + verify + render + write)."""
    source = select_source(config, "init")
    writes: list[float] = []
    try:
        renderer = build_renderer(config)
        sink = build_sink(config, renderer)
        store = SnapshotStore(config.secrets)
        syncer = Syncer(config.secrets, source, sink, store, sync_settings(config), renderer=renderer)
        render, write = renderer.render, sink.write

        def timed_render(snapshot: Snapshot) -> Snapshot:
            started = time.perf_counter()
            try:
                return render(snapshot)
            finally:
                writes.append(time.perf_counter() - started)

        def timed_write(snapshot: Snapshot) -> bool:
            started = time.perf_counter()
            try:
                return write(snapshot)
            finally:
                writes.append(time.perf_counter() - started)

        renderer.render = timed_render  # type: ignore[method-assign]
        sink.write = timed_write  # type: ignore[method-assign]
        with measured() as times:
            report = await syncer.bootstrap(deadline=time.monotonic() + config.timeout)
    finally:
        await source.close()
    if report.failures or len(report.snapshot) != len(config.secrets):
        raise RuntimeError(f"bootstrap incomplete: {sorted(report.failures)}")
    return Run(times[0], times[1], sum(writes))


def agent_time(target: str, count: int, concurrency: int | None) -> Run:
    with scratch_dir() as output_dir:  # a fresh directory: every run writes the whole snapshot
        config = agent_config(target, output_dir / "secrets", count, concurrency)
        return asyncio.run(agent_bootstrap(config))


async def _source_only(config: Config) -> Run:
    source = select_source(config, "init")
    try:
        with measured() as times:
            fetched = await asyncio.gather(*(source.fetch(spec) for spec in config.secrets))
    finally:
        await source.close()
    if [f.data for f in fetched] != [VALUE] * len(config.secrets):
        raise RuntimeError("the agent's source read wrong values")
    return Run(times[0], times[1])


def source_time(target: str, count: int) -> Run:
    """The agent's source (``GcpSource.fetch``) alone, every call at once: no Syncer, no files."""
    with scratch_dir() as output_dir:
        return asyncio.run(_source_only(agent_config(target, output_dir / "secrets", count, None)))


def names(count: int) -> list[str]:
    return [f"projects/{PROJECT}/secrets/{secret_id(i)}/versions/latest" for i in range(count)]


async def _async_client_all_at_once(target: str, count: int) -> Run:
    with measured() as times:
        client = secretmanager_v1.SecretManagerServiceAsyncClient(
            transport=SecretManagerServiceGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(target))
        )
        responses = await asyncio.gather(*(client.access_secret_version(name=name) for name in names(count)))
    await client.transport.close()  # type: ignore[no-untyped-call]
    if [r.payload.data for r in responses] != [VALUE] * count:
        raise RuntimeError("the async client read wrong values")
    return Run(times[0], times[1])


def async_client_time(target: str, count: int) -> Run:
    """The official asyncio client with every call in flight at once: no agent, no files."""
    return asyncio.run(_async_client_all_at_once(target, count))


async def _raw_grpc_all_at_once(target: str, count: int) -> Run:
    with measured() as times:
        channel = grpc.aio.insecure_channel(target)
        access = channel.unary_unary(
            "/google.cloud.secretmanager.v1.SecretManagerService/AccessSecretVersion",
            request_serializer=secretmanager_v1.AccessSecretVersionRequest.serialize,
            response_deserializer=secretmanager_v1.AccessSecretVersionResponse.deserialize,
        )
        requests = [secretmanager_v1.AccessSecretVersionRequest(name=name) for name in names(count)]
        responses = await asyncio.gather(*(access(request, timeout=10) for request in requests))
    await channel.close()
    if [r.payload.data for r in responses] != [VALUE] * count:
        raise RuntimeError("the raw gRPC calls read wrong values")
    return Run(times[0], times[1])


def raw_grpc_time(target: str, count: int) -> Run:
    """The floor of this machine and emulator: bare grpc.aio calls all at once, no client library."""
    return asyncio.run(_raw_grpc_all_at_once(target, count))


def sequential_time(target: str, count: int) -> Run:
    """The berglas / secrets-init way: the official sync client, one call after the other."""
    with measured() as times:
        client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(target))
        )
        values = [client.access_secret_version(name=name).payload.data for name in names(count)]
    client.transport.close()  # type: ignore[no-untyped-call]
    if values != [VALUE] * count:
        raise RuntimeError("the sequential loop read wrong values")
    return Run(times[0], times[1])


@dataclass(frozen=True)
class Column:
    title: str
    measure: Callable[[int], Run]
    repeats: int = REPEATS


@dataclass(frozen=True)
class Series:
    """One column's runs: ``runs[n][i]`` is round ``i`` with ``n`` secrets."""

    runs: dict[int, list[Run]] = field(default_factory=dict)

    def wall(self, n: int) -> float:
        """Median wall seconds with ``n`` secrets."""
        return statistics.median(r.wall for r in self.runs[n])

    def ratios(self, n: int) -> list[float]:
        """Per round: wall time of ``n`` secrets over the wall time of 1 in the same round."""
        return [big.wall / one.wall for big, one in zip(self.runs[n], self.runs[1], strict=True)]

    def ratio(self, n: int) -> float:
        return statistics.median(self.ratios(n))

    def ratio_range(self, n: int) -> tuple[float, float]:
        ratios = self.ratios(n)
        return min(ratios), max(ratios)

    def cpu_per_secret(self, n: int) -> float:
        """Median extra CPU seconds per secret beyond the first (``n`` secrets against 1, same round)."""
        extra = [(big.cpu - one.cpu) / (n - 1) for big, one in zip(self.runs[n], self.runs[1], strict=True)]
        return statistics.median(extra)

    def service_cpu_per_secret(self, n: int) -> float:
        """The emulator's extra CPU seconds per secret beyond the first, from the sums over every round."""
        big, one = sum(r.service_cpu for r in self.runs[n]), sum(r.service_cpu for r in self.runs[1])
        return (big - one) / len(self.runs[n]) / (n - 1)

    def write(self, n: int) -> float:
        """Median seconds rendering and writing the snapshot took with ``n`` secrets (0 for columns that write
        nothing)."""
        return statistics.median(r.write for r in self.runs[n])


def interleaved(
    columns: Sequence[Column], sizes: Sequence[int], service_cpu: Callable[[], float]
) -> dict[str, Series]:
    """Every column's runs, round-robin: every column, every size, then again; ``service_cpu()`` (the
    emulator's CPU seconds so far) is read around each run."""
    series = {c.title: Series({n: [] for n in sizes}) for c in columns}
    for repeat in range(max(c.repeats for c in columns)):
        for n in sizes:
            for column in columns:
                if repeat < column.repeats:
                    before = service_cpu()
                    run = column.measure(n)
                    run = dataclasses.replace(run, service_cpu=service_cpu() - before)
                    series[column.title].runs[n].append(run)
    return series


AGENT_DEFAULT = f"agent, default settings (concurrency {DEFAULT_CONCURRENCY})"
AGENT_WIDE = f"agent, --concurrency {WIDE_CONCURRENCY}"
SOURCE_ONLY = "agent's source only, all at once, no files"
ASYNC_CLIENT = "official async client, all at once, no files"
RAW_GRPC = "raw grpc.aio, all at once, no files (floor)"
SEQUENTIAL = "sequential official client (baseline)"


@dataclass(frozen=True)
class Result:
    """Every column's runs (the first is the agent with its defaults)."""

    columns: dict[str, Series]

    def target_ratio(self, column: int) -> float:
        """Median over rounds of the time of ``TARGET_SIZE`` secrets over the time of 1, in the
        ``column``-th column."""
        return list(self.columns.values())[column].ratio(TARGET_SIZE)

    @property
    def default_ratio(self) -> float:
        """The agent with its default settings: what the target is about."""
        return self.columns[AGENT_DEFAULT].ratio(TARGET_SIZE)

    @property
    def default_range(self) -> tuple[float, float]:
        return self.columns[AGENT_DEFAULT].ratio_range(TARGET_SIZE)

    @property
    def wide_ratio(self) -> float:
        """The agent with every secret in flight at once."""
        return self.columns[AGENT_WIDE].ratio(TARGET_SIZE)

    @property
    def wide_range(self) -> tuple[float, float]:
        return self.columns[AGENT_WIDE].ratio_range(TARGET_SIZE)

    @property
    def client_ratio(self) -> float:
        """The official async client, all at once: what the agent is compared with."""
        return self.columns[ASYNC_CLIENT].ratio(TARGET_SIZE)

    @property
    def met(self) -> bool:
        return self.default_ratio <= TARGET_RATIO


def measure() -> Result:
    with scratch_dir() as work:
        values = {secret_id(i): VALUE.decode() for i in range(max(SIZES))}
        seed = write_seed(work / "seed.yaml", PROJECT, values)
        # A process of its own: in a thread here, the emulator's per-call work would be billed to the agent.
        with emulator_process(seed, [f"*:latency_ms={LATENCY_MS}"]) as ep:
            target = ep.grpc_target
            columns = [
                Column(AGENT_DEFAULT, lambda n: agent_time(target, n, None)),
                Column(AGENT_WIDE, lambda n: agent_time(target, n, WIDE_CONCURRENCY)),
                Column(SOURCE_ONLY, lambda n: source_time(target, n)),
                Column(ASYNC_CLIENT, lambda n: async_client_time(target, n)),
                Column(RAW_GRPC, lambda n: raw_grpc_time(target, n)),
                Column(SEQUENTIAL, lambda n: sequential_time(target, n), SEQUENTIAL_REPEATS),
            ]
            for column in columns[:-1]:  # warm up: imports, first connection, code paths
                column.measure(TARGET_SIZE)
            return Result(interleaved(columns, SIZES, lambda: process_cpu(ep.pid)))


def _cell(series: Series, n: int) -> str:
    if n == 1:
        return f"{series.wall(1) * 1000:,.0f} ms"
    low, high = series.ratio_range(n)
    return f"{series.wall(n) * 1000:,.0f} ms, {series.ratio(n):.2f}x ({low:.2f}-{high:.2f})"


def print_table(result: Result) -> None:
    print(
        f"\nBootstrap of N secrets, emulator adding {LATENCY_MS} ms per call: median wall time, and the "
        f"ratio to the 1-secret time of the same column in the same round (median of {REPEATS} rounds, "
        f"min-max; {SEQUENTIAL_REPEATS} rounds for the sequential loop)"
    )
    titles = list(result.columns)
    print("| secrets | " + " | ".join(titles) + " |")
    print("| ---: | " + " | ".join("---:" for _ in titles) + " |")
    for n in SIZES:
        print(f"| {n} | " + " | ".join(_cell(series, n) for series in result.columns.values()) + " |")
    cpu = [
        f"{s.cpu_per_secret(TARGET_SIZE) * 1e6:,.0f} / {s.service_cpu_per_secret(TARGET_SIZE) * 1e6:,.0f} µs"
        for s in result.columns.values()
    ]
    print(
        f"| CPU per extra secret ({TARGET_SIZE} vs 1), this process / the emulator | "
        + " | ".join(cpu)
        + " |"
    )
    print_breakdown(result)
    rounds = {n: -(-n // DEFAULT_CONCURRENCY) for n in SIZES}
    print(
        f"Rounds of {LATENCY_MS} ms latency at the default concurrency ({DEFAULT_CONCURRENCY}): "
        + ", ".join(f"{n} -> {r}" for n, r in rounds.items())
    )
    low, high = result.default_range
    verdict = "met" if result.met else "MISSED"
    print(
        f"Target: {TARGET_SIZE} secrets at most {TARGET_RATIO}x the time of 1 at the default settings: "
        f"{result.default_ratio:.2f}x ({low:.2f}-{high:.2f}, {REPEATS} rounds): {verdict}; the official "
        f"async client, all at once, no files: {result.client_ratio:.2f}x. "
        "Reproduce: python -m bench.bootstrap"
    )


def print_breakdown(result: Result) -> None:
    """What the agent's extra time for ``TARGET_SIZE`` secrets (over 1) is made of, from the medians."""
    n = TARGET_SIZE
    agent, source = result.columns[AGENT_DEFAULT], result.columns[SOURCE_ONLY]
    client = result.columns[ASYNC_CLIENT]
    extra = agent.wall(n) - agent.wall(1)
    fetching = source.wall(n) - source.wall(1)
    writing = agent.write(n) - agent.write(1)
    print(
        f"The agent's {n} secrets at its defaults take {extra * 1000:.1f} ms more than 1: fetching "
        f"{fetching * 1000:.1f} ms (its source alone, every call at once; the official async client "
        f"{(client.wall(n) - client.wall(1)) * 1000:.1f} ms, bare grpc.aio "
        f"{(result.columns[RAW_GRPC].wall(n) - result.columns[RAW_GRPC].wall(1)) * 1000:.1f} ms) + rendering "
        f"and writing {n - 1} more files {writing * 1000:.1f} ms + the rest (the Syncer: retry wrapper, "
        f"deadline, bookkeeping) {(extra - fetching - writing) * 1000:.1f} ms."
    )


def main() -> Result:
    result = measure()
    print_table(result)
    return result


if __name__ == "__main__":
    main()
