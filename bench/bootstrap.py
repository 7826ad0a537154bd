"""Bootstrap time (``init``): N secrets fetched and written, with the emulator adding 50 ms to every call.

The agent's real path: a Config built by ``load_config`` (as ``secrets-agent init --secret ...`` would),
then ``select_source`` (GcpSource, plaintext gRPC to the emulator), ``build_sink`` (SnapshotSink on
``/dev/shm``) and ``Syncer.bootstrap`` from ``agent.app``. Timed: from the first fetch (the channel is
opened lazily, as in ``init``) to the snapshot written; interpreter start-up and imports are not.

Baseline, same run, same emulator: a sequential loop over the official synchronous client, one
AccessSecretVersion after the other, which is what berglas and secrets-init do (they fetch into the
environment, so the loop writes no files). Two more columns split the agent's time: the official asyncio
client with every call in flight and no files (what the agent's source builds on), and bare grpc.aio calls
(the floor of this machine and this emulator: the Python gRPC stack on both ends, 2 cores shared).

The agent runs twice: with the default concurrency (32: 50 secrets need two rounds of latency, 200 need
seven) and with every secret in flight at once. Every figure is the median of ``REPEATS`` interleaved runs
and is shown as a ratio to the 1-secret time of the same column.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
    SecretManagerServiceGrpcTransport,
)

from agent.app import build_renderer, build_sink, select_source, sync_settings
from agent.config import Config, load_config
from agent.core.store import SnapshotStore
from agent.sync import Syncer
from testing.emulator_process import emulator_process, write_seed

PROJECT = "bench-project"
SIZES = (1, 10, 50, 200)
REPEATS = 5
SEQUENTIAL_REPEATS = 3
"""The sequential loop takes 50 ms per secret (13 s per series): fewer runs, and its spread is small."""
LATENCY_MS = 50
DEFAULT_CONCURRENCY = 32
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


def agent_config(target: str, output_dir: Path, count: int, concurrency: int) -> Config:
    flags: dict[str, object] = {
        "gcp.endpoint": target,
        "project": PROJECT,
        "output_dir": str(output_dir),
        "concurrency": str(concurrency),
        "secrets": [f"{secret_id(i)}={secret_id(i)}" for i in range(count)],
    }
    return load_config(None, {}, flags)


async def agent_bootstrap(config: Config) -> float:
    """Seconds for the agent's bootstrap of every secret in ``config`` (fetch + verify + write)."""
    source = select_source(config, "init")
    try:
        sink = build_sink(config, build_renderer(config))
        store = SnapshotStore(config.secrets)
        syncer = Syncer(config.secrets, source, sink, store, sync_settings(config))
        started = time.perf_counter()
        report = await syncer.bootstrap(deadline=time.monotonic() + config.timeout)
        elapsed = time.perf_counter() - started
    finally:
        await source.close()
    if report.failures or len(report.snapshot) != len(config.secrets):
        raise RuntimeError(f"bootstrap incomplete: {sorted(report.failures)}")
    return elapsed


def agent_time(target: str, count: int, concurrency: int) -> float:
    with scratch_dir() as output_dir:  # a fresh directory: every run writes the whole snapshot
        config = agent_config(target, output_dir / "secrets", count, concurrency)
        return asyncio.run(agent_bootstrap(config))


def names(count: int) -> list[str]:
    return [f"projects/{PROJECT}/secrets/{secret_id(i)}/versions/latest" for i in range(count)]


async def _async_client_all_at_once(target: str, count: int) -> float:
    started = time.perf_counter()
    client = secretmanager_v1.SecretManagerServiceAsyncClient(
        transport=SecretManagerServiceGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(target))
    )
    responses = await asyncio.gather(*(client.access_secret_version(name=name) for name in names(count)))
    elapsed = time.perf_counter() - started
    await client.transport.close()  # type: ignore[no-untyped-call]
    if [r.payload.data for r in responses] != [VALUE] * count:
        raise RuntimeError("the async client read wrong values")
    return elapsed


def async_client_time(target: str, count: int) -> float:
    """The official asyncio client with every call in flight at once: no agent, no files."""
    return asyncio.run(_async_client_all_at_once(target, count))


async def _raw_grpc_all_at_once(target: str, count: int) -> float:
    started = time.perf_counter()
    channel = grpc.aio.insecure_channel(target)
    access = channel.unary_unary(
        "/google.cloud.secretmanager.v1.SecretManagerService/AccessSecretVersion",
        request_serializer=secretmanager_v1.AccessSecretVersionRequest.serialize,
        response_deserializer=secretmanager_v1.AccessSecretVersionResponse.deserialize,
    )
    requests = [secretmanager_v1.AccessSecretVersionRequest(name=name) for name in names(count)]
    responses = await asyncio.gather(*(access(request, timeout=10) for request in requests))
    elapsed = time.perf_counter() - started
    await channel.close()
    if [r.payload.data for r in responses] != [VALUE] * count:
        raise RuntimeError("the raw gRPC calls read wrong values")
    return elapsed


def raw_grpc_time(target: str, count: int) -> float:
    """The floor of this machine and emulator: bare grpc.aio calls all at once, no client library."""
    return asyncio.run(_raw_grpc_all_at_once(target, count))


def sequential_time(target: str, count: int) -> float:
    """The berglas / secrets-init way: the official sync client, one call after the other."""
    started = time.perf_counter()
    client = secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(target))
    )
    values = [client.access_secret_version(name=name).payload.data for name in names(count)]
    elapsed = time.perf_counter() - started
    client.transport.close()  # type: ignore[no-untyped-call]
    if values != [VALUE] * count:
        raise RuntimeError("the sequential loop read wrong values")
    return elapsed


@dataclass(frozen=True)
class Column:
    title: str
    measure: Callable[[int], float]
    repeats: int = REPEATS


def interleaved_medians(columns: Sequence[Column], sizes: Sequence[int]) -> dict[str, dict[int, float]]:
    """Median seconds per column and size. Runs go round-robin (every column, every size, then again),
    so a burst of load from elsewhere on the machine hits all columns alike instead of one."""
    times: dict[str, dict[int, list[float]]] = {c.title: {n: [] for n in sizes} for c in columns}
    for repeat in range(max(c.repeats for c in columns)):
        for n in sizes:
            for column in columns:
                if repeat < column.repeats:
                    times[column.title][n].append(column.measure(n))
    return {
        title: {n: statistics.median(runs) for n, runs in by_size.items()} for title, by_size in times.items()
    }


@dataclass(frozen=True)
class Result:
    """Median seconds per size, per column (the first column is the agent with its defaults)."""

    columns: dict[str, dict[int, float]]

    def target_ratio(self, column: int) -> float:
        """Time of ``TARGET_SIZE`` secrets over the time of 1, in the ``column``-th column."""
        times = list(self.columns.values())[column]
        return times[TARGET_SIZE] / times[1]

    @property
    def default_ratio(self) -> float:
        """The agent with its default concurrency: what the target is about."""
        return self.target_ratio(0)

    @property
    def wide_ratio(self) -> float:
        """The agent with every secret in flight at once."""
        return self.target_ratio(1)


def measure() -> Result:
    with scratch_dir() as work:
        values = {secret_id(i): VALUE.decode() for i in range(max(SIZES))}
        seed = write_seed(work / "seed.yaml", PROJECT, values)
        # A process of its own: in a thread here, the emulator's per-call work would be billed to the agent.
        with emulator_process(seed, [f"*:latency_ms={LATENCY_MS}"]) as ep:
            target = ep.grpc_target
            columns = [
                Column(
                    f"agent, concurrency {DEFAULT_CONCURRENCY} (default)",
                    lambda n: agent_time(target, n, DEFAULT_CONCURRENCY),
                ),
                Column(
                    f"agent, --concurrency {WIDE_CONCURRENCY}",
                    lambda n: agent_time(target, n, WIDE_CONCURRENCY),
                ),
                Column(
                    "official async client, all at once, no files", lambda n: async_client_time(target, n)
                ),
                Column("raw grpc.aio, all at once, no files (floor)", lambda n: raw_grpc_time(target, n)),
                Column(
                    "sequential official client (baseline)",
                    lambda n: sequential_time(target, n),
                    SEQUENTIAL_REPEATS,
                ),
            ]
            agent_time(target, 1, DEFAULT_CONCURRENCY)  # warm up: imports, first connection
            return Result(interleaved_medians(columns, SIZES))


def print_table(result: Result) -> None:
    print(
        f"\nBootstrap of N secrets, emulator adding {LATENCY_MS} ms per call, median of {REPEATS} runs "
        f"({SEQUENTIAL_REPEATS} for the sequential loop); ms, and ratio to the 1-secret time of its column"
    )
    titles = list(result.columns)
    print("| secrets | " + " | ".join(titles) + " | sequential / agent default |")
    print("| ---: | " + " | ".join("---:" for _ in titles) + " | ---: |")
    agent, sequential = result.columns[titles[0]], result.columns[titles[-1]]
    for n in SIZES:
        cells = [
            f"{times[n] * 1000:,.0f} ms ({times[n] / times[1]:.2f}x)" for times in result.columns.values()
        ]
        print(f"| {n} | " + " | ".join(cells) + f" | {sequential[n] / agent[n]:.1f}x |")
    rounds = {n: -(-n // DEFAULT_CONCURRENCY) for n in SIZES}
    print(
        f"Rounds of {LATENCY_MS} ms latency at the default concurrency: "
        + ", ".join(f"{n} -> {r}" for n, r in rounds.items())
    )


def main() -> Result:
    result = measure()
    print_table(result)
    return result


if __name__ == "__main__":
    main()
