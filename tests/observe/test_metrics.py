"""Metrics of a real Syncer (GcpSource -> the emulator, SnapshotSink on disk), read with get_sample_value.

The clock of the SnapshotStore is injected, so staleness and readiness are checked at exact ages without
waiting. Every test's emulator holds the canary value; no exposition may contain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import prometheus_client
from aiohttp import web
from google.cloud import secretmanager_v1
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import crc32c
from agent.core.store import SnapshotStore
from agent.notify.command import CommandNotifier
from agent.notify.coordinator import ReloadCoordinator
from agent.notify.http import HttpNotifier
from agent.observe.metrics import Metrics
from agent.sinks.snapshot import SnapshotSink
from agent.sources.dotenv import DotenvSource, content_version
from agent.sync import Syncer, SyncSettings
from agent_emulator.server import EmulatorEndpoints
from tests.observe.conftest import (
    CANARY,
    FAST,
    MAX_STALENESS,
    PROJECT,
    Rig,
    add_version,
    clear_faults,
    create_secret,
    set_faults,
    spec,
    syncer_rig,
)

# --------------------------------------------------------------------------------------------------
# Fetches, versions, rotations
# --------------------------------------------------------------------------------------------------


async def test_before_the_first_fetch_secrets_are_infinitely_stale_and_the_agent_not_ready(rig: Rig) -> None:
    for name in ("db", "api"):
        assert rig.sample("secrets_agent_staleness_seconds", secret=name) == math.inf
        assert rig.sample("secrets_agent_last_success_timestamp_seconds", secret=name) is None
        # Known secrets start at 0, so the first rotation is visible to rate()/increase().
        assert rig.sample("secrets_agent_rotations_total", secret=name) == 0
        assert rig.fetches(name, "ok") == 0
    assert rig.sample("secrets_agent_ready") == 0


async def test_bootstrap_counts_one_ok_fetch_per_secret_and_exports_the_served_versions(rig: Rig) -> None:
    await rig.bootstrap()

    assert rig.fetches("db", "ok") == 1
    assert rig.fetches("api", "ok") == 1
    assert rig.fetches("db", "error") == 0
    assert rig.sample("secrets_agent_fetch_duration_seconds_count") == 2
    assert 0 < (rig.sample("secrets_agent_fetch_duration_seconds_sum") or 0) < 10
    assert rig.sample("secrets_agent_secret_version", secret="db") == 2
    assert rig.sample("secrets_agent_secret_version", secret="api") == 1
    # A first fetch is not a rotation.
    assert rig.sample("secrets_agent_rotations_total", secret="db") == 0
    assert rig.sample("secrets_agent_last_success_timestamp_seconds", secret="db") == rig.clock.now
    assert rig.sample("secrets_agent_staleness_seconds", secret="db") == 0
    assert rig.sample("secrets_agent_ready") == 1
    assert rig.sample("secrets_agent_backend_errors_total", code="UNAVAILABLE") is None


async def test_a_rotation_is_counted_and_moves_the_version_gauge(
    rig: Rig, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await rig.bootstrap()
    add_version(client, "db-password", "db-v3")

    assert await rig.syncer.check()

    assert rig.sample("secrets_agent_rotations_total", secret="db") == 1
    assert rig.sample("secrets_agent_secret_version", secret="db") == 3
    assert rig.fetches("db", "ok") == 2
    assert rig.sample("secrets_agent_rotations_total", secret="api") == 0
    assert rig.fetches("api", "unchanged") == 1
    assert (rig.output / "db").read_bytes() == b"db-v3"

    # Nothing new: a second round confirms, rotates nothing.
    assert await rig.syncer.check()
    assert rig.sample("secrets_agent_rotations_total", secret="db") == 1
    assert rig.fetches("db", "unchanged") == 1


async def test_the_metadata_strategy_counts_a_version_check_as_unchanged(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    create_secret(client, "db-password", "db-v1")
    specs = [spec("db", "db-password")]
    settings = SyncSettings(strategy="metadata", backoff=FAST)
    async with syncer_rig(emulator, specs, tmp_path / "out", settings=settings) as rig:
        await rig.bootstrap()
        assert await rig.syncer.check()
        assert rig.fetches("db", "unchanged") == 1
        add_version(client, "db-password", "db-v2")
        assert await rig.syncer.check()
        assert rig.fetches("db", "ok") == 2
        assert rig.sample("secrets_agent_rotations_total", secret="db") == 1
        assert rig.sample("secrets_agent_secret_version", secret="db") == 2


# --------------------------------------------------------------------------------------------------
# Failures, staleness, readiness
# --------------------------------------------------------------------------------------------------


async def test_a_backend_failure_is_counted_by_status_code_and_the_old_value_kept(
    rig: Rig, emulator: EmulatorEndpoints
) -> None:
    await rig.bootstrap()
    set_faults(emulator, {"AccessSecretVersion": {"fail_next": 1, "fail_code": "UNAVAILABLE"}})

    assert not await rig.syncer.check(["db"])

    assert rig.sample("secrets_agent_backend_errors_total", code="UNAVAILABLE") == 1
    assert rig.fetches("db", "error") == 1
    assert rig.sample("secrets_agent_secret_version", secret="db") == 2
    assert (rig.output / "db").read_bytes() == b"db-v2"

    set_faults(emulator, {"AccessSecretVersion": {"fail_next": 1, "fail_code": "PERMISSION_DENIED"}})
    assert not await rig.syncer.check(["db"])
    assert rig.sample("secrets_agent_backend_errors_total", code="PERMISSION_DENIED") == 1
    assert rig.sample("secrets_agent_backend_errors_total", code="UNAVAILABLE") == 1
    assert rig.fetches("db", "error") == 2


async def test_bootstrap_counts_every_failed_attempt_it_retried(
    rig: Rig, emulator: EmulatorEndpoints
) -> None:
    set_faults(emulator, {"AccessSecretVersion": {"fail_next": 1, "fail_code": "UNAVAILABLE"}})

    await rig.bootstrap()

    errors = sum(rig.fetches(name, "error") or 0 for name in ("db", "api"))
    oks = sum(rig.fetches(name, "ok") or 0 for name in ("db", "api"))
    assert (errors, oks) == (1, 2)
    assert rig.sample("secrets_agent_backend_errors_total", code="UNAVAILABLE") == 1
    assert rig.sample("secrets_agent_fetch_duration_seconds_count") == 3


async def test_staleness_grows_with_time_and_readiness_follows_max_staleness(
    rig: Rig, emulator: EmulatorEndpoints
) -> None:
    await rig.bootstrap()
    fetched_at = rig.clock.now

    rig.clock.advance(30)
    assert rig.sample("secrets_agent_staleness_seconds", secret="db") == 30
    assert rig.sample("secrets_agent_staleness_seconds", secret="api") == 30
    assert rig.sample("secrets_agent_last_success_timestamp_seconds", secret="db") == fetched_at
    assert rig.sample("secrets_agent_ready") == 1

    rig.clock.advance(MAX_STALENESS - 30 + 1)
    assert rig.sample("secrets_agent_ready") == 0

    # The backend is down: still stale, still not ready, and the age keeps growing.
    set_faults(emulator, {"*": {"unavailable": 1.0}})
    assert not await rig.syncer.check()
    rig.clock.advance(5)
    assert rig.sample("secrets_agent_ready") == 0
    assert rig.sample("secrets_agent_staleness_seconds", secret="db") == MAX_STALENESS + 1 + 5

    clear_faults(emulator)
    assert await rig.syncer.check()
    assert rig.sample("secrets_agent_ready") == 1
    assert rig.sample("secrets_agent_staleness_seconds", secret="db") == 0
    assert rig.sample("secrets_agent_last_success_timestamp_seconds", secret="db") == rig.clock.now


async def test_without_max_staleness_only_a_missing_secret_makes_the_agent_not_ready(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    create_secret(client, "db-password", "db-v1")
    async with syncer_rig(emulator, [spec("db", "db-password")], tmp_path / "out", max_staleness=None) as rig:
        assert rig.sample("secrets_agent_ready") == 0
        await rig.bootstrap()
        rig.clock.advance(10**9)
        assert rig.sample("secrets_agent_ready") == 1


# --------------------------------------------------------------------------------------------------
# Reload notifications, endpoint requests, build and process
# --------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_app_answering(status: int) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 that answers every POST with ``status``; yields its URL."""

    async def reload(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/reload", reload)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/reload"
    finally:
        await runner.cleanup()


async def test_reload_notifications_are_counted_by_notifier_and_result() -> None:
    metrics = Metrics()
    async with http_app_answering(503) as url:
        coordinator = ReloadCoordinator(
            [CommandNotifier(["true"], timeout=10), HttpNotifier(url, timeout=5, retries=0)],
            debounce=0.0,
            backoff=FAST,
            max_attempts=2,
            on_result=metrics.reload,
        )
        runner = asyncio.create_task(coordinator.run())
        try:
            coordinator.request({"db": "3"})
            async with asyncio.timeout(30):
                await coordinator.idle()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def reloads(notifier: str, result: str) -> float | None:
        return metrics.registry.get_sample_value(
            "secrets_agent_reload_notifications_total", {"notifier": notifier, "result": result}
        )

    assert reloads("command", "ok") == 1
    assert reloads("command", "error") is None
    assert reloads("http", "error") == 2  # both attempts failed
    assert reloads("http", "ok") is None


def test_endpoint_requests_are_counted_by_route_template_and_status() -> None:
    metrics = Metrics()
    metrics.request("/v1/secrets/{name}", 200)
    metrics.request("/v1/secrets/{name}", 200)
    metrics.request("/v1/secrets/{name}", 404)

    def requests(route: str, code: str) -> float | None:
        return metrics.registry.get_sample_value(
            "secrets_agent_endpoint_requests_total", {"route": route, "code": code}
        )

    assert requests("/v1/secrets/{name}", "200") == 2
    assert requests("/v1/secrets/{name}", "404") == 1


def test_build_info_and_process_metrics_live_on_our_own_registry() -> None:
    first, second = Metrics(), Metrics()  # two agents in one process: no "duplicated timeseries" clash
    assert first.registry is not second.registry
    info = [s for f in first.registry.collect() for s in f.samples if s.name == "secrets_agent_build_info"]
    assert len(info) == 1
    assert info[0].value == 1
    assert set(info[0].labels) == {"version", "python"}
    assert first.registry.get_sample_value("process_cpu_seconds_total") is not None
    assert first.registry.get_sample_value("process_resident_memory_bytes", {}) is not None
    names = {f.name for f in first.registry.collect()}
    assert "python_info" in names
    # Nothing of ours leaks into prometheus_client's global registry.
    assert not [f for f in prometheus_client.REGISTRY.collect() if f.name.startswith("secrets_agent")]


def test_a_non_numeric_version_is_not_exported() -> None:
    metrics = Metrics()
    metrics.served_version("db", "4")
    assert metrics.registry.get_sample_value("secrets_agent_secret_version", {"secret": "db"}) == 4
    # e.g. db moved to a .env file in dev: its content tag is a checksum of the value, never exported.
    metrics.served_version("db", "dotenv-0a1b2c3d")
    metrics.served_version("other", "dotenv-0a1b2c3d")
    assert metrics.registry.get_sample_value("secrets_agent_secret_version", {"secret": "db"}) is None
    assert b"0a1b2c3d" not in generate_latest(metrics.registry)


# --------------------------------------------------------------------------------------------------
# No value, nor anything derived from one, in the exposition
# --------------------------------------------------------------------------------------------------


def forbidden_strings(value: str) -> list[str]:
    """The canary and what a careless exporter could derive from it (checksum, .env content tag)."""
    data = value.encode()
    return [value, content_version(data), f"{crc32c(data):08x}", str(crc32c(data))]


def assert_clean(registry: CollectorRegistry, value: str) -> None:
    for exposition in (generate_latest(registry).decode(), generate_openmetrics(registry).decode()):
        for text in forbidden_strings(value):
            assert text not in exposition
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            for label in sample.labels.values():
                assert value not in label


async def test_the_canary_value_appears_in_no_label_or_sample(
    rig: Rig, emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await rig.bootstrap()
    add_version(client, "api-key", CANARY + "-rotated")
    assert await rig.syncer.check()
    set_faults(emulator, {"AccessSecretVersion": {"fail_next": 2, "fail_code": "UNAVAILABLE"}})
    assert not await rig.syncer.check()

    assert rig.sample("secrets_agent_rotations_total", secret="api") == 1
    assert_clean(rig.registry, CANARY)
    assert_clean(rig.registry, CANARY + "-rotated")


async def test_a_dotenv_value_and_its_content_tag_appear_nowhere(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"API={CANARY}\n")
    specs = [SecretSpec(name="api", ref=parse_ref(f"projects/{PROJECT}/secrets/api-key"))]
    store = SnapshotStore(specs)
    metrics = Metrics(store=store, max_staleness=MAX_STALENESS)
    source = DotenvSource(env_file)
    syncer = Syncer(
        specs, source, SnapshotSink(tmp_path / "out", specs, None), store, SyncSettings(), metrics=metrics
    )
    try:
        report = await syncer.bootstrap(deadline=None)
    finally:
        await source.close()

    assert not report.failures
    assert (tmp_path / "out" / "api").read_text() == CANARY
    assert metrics.registry.get_sample_value("secrets_agent_ready") == 1
    assert (
        metrics.registry.get_sample_value("secrets_agent_fetches_total", {"secret": "api", "result": "ok"})
        == 1
    )
    assert metrics.registry.get_sample_value("secrets_agent_secret_version", {"secret": "api"}) is None
    assert_clean(metrics.registry, CANARY)
