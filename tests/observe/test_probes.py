"""The probes listener, served for real on 127.0.0.1 port 0: /healthz, /readyz, /metrics.

Readiness comes from a real Syncer against the emulator (store on a fake clock); liveness from heartbeats,
on a fake clock or beaten by the Syncer's real poll loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.cloud import secretmanager_v1
from prometheus_client.parser import text_string_to_metric_families

from agent.observe.metrics import Liveness, Metrics
from agent.observe.probes import build_probes_app, serve_probes
from agent.sync import SyncSettings
from agent_emulator.server import EmulatorEndpoints
from tests.observe.conftest import (
    CANARY,
    FAST,
    MAX_STALENESS,
    Clock,
    Rig,
    clear_faults,
    create_secret,
    set_faults,
    spec,
    syncer_rig,
)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``serve_probes(app)`` on 127.0.0.1:0 as a task; yields the base URL; cancels it afterwards."""
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_probes(app, "127.0.0.1", 0, started=bound.set_result))
    try:
        async with asyncio.timeout(10):
            port = await asyncio.shield(bound)
        yield f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def wait_for_status(url: str, status: int, within: float = 10.0) -> Any:
    """GET ``url`` every 20 ms until it answers ``status``; its JSON body. Fails after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            got, body = await get_json(url)
            if got == status:
                return body
            await asyncio.sleep(0.02)


class ReadClock(Clock):
    """A fake clock that says when it was first read (a heartbeat reads it only when beaten)."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.read = asyncio.Event()

    def __call__(self) -> float:
        self.read.set()
        return super().__call__()


def all_good() -> list[str]:
    return []


def probes_for(rig: Rig, alive: Callable[[], list[str]] = all_good) -> web.Application:
    return build_probes_app(
        registry=rig.registry, ready=lambda: rig.store.not_ready_reasons(MAX_STALENESS), alive=alive
    )


# --------------------------------------------------------------------------------------------------
# /healthz
# --------------------------------------------------------------------------------------------------


async def test_healthz_fails_while_a_heartbeat_is_overdue_and_recovers_with_the_next_beat() -> None:
    clock = Clock(0.0)
    liveness = Liveness(clock)
    heart = liveness.heartbeat("sync", budget=5.0)
    app = build_probes_app(registry=Metrics().registry, ready=all_good, alive=liveness.problems)
    async with serving(app) as base:
        assert await get_json(base + "/healthz") == (200, {"status": "ok"})

        heart.beat(then_wait=10.0)
        clock.advance(15.0)  # exactly due: still fine
        assert (await get_json(base + "/healthz"))[0] == 200
        clock.advance(0.5)
        status, body = await get_json(base + "/healthz")
        assert status == 503
        assert body["status"] == "unhealthy"
        assert len(body["problems"]) == 1
        assert body["problems"][0].startswith("sync: no heartbeat for 15.5s")

        heart.beat(then_wait=None)  # idle, waiting for an outside event: alive however long it takes
        clock.advance(10**6)
        assert await get_json(base + "/healthz") == (200, {"status": "ok"})


def test_a_budget_that_follows_the_work_is_asked_at_every_beat() -> None:
    # run's sync loop: a selection that adds secrets makes each round longer, and /healthz must allow it.
    clock = Clock(0.0)
    liveness = Liveness(clock)
    secrets = ["db"]
    heart = liveness.heartbeat("sync", budget=lambda: 5.0 * len(secrets))
    heart.beat()
    clock.advance(6.0)
    assert liveness.problems()[0].startswith("sync: no heartbeat for 6.0s")
    secrets += ["payments-db", "payments-api"]
    heart.beat()
    clock.advance(15.0)
    assert liveness.problems() == []
    clock.advance(0.5)
    assert liveness.problems()[0].startswith("sync: no heartbeat for 15.5s")


async def test_healthz_reports_a_poll_loop_stuck_on_a_backend_that_does_not_answer(
    rig: Rig, emulator: EmulatorEndpoints
) -> None:
    await rig.bootstrap()
    liveness = Liveness()
    rig.syncer.heartbeat = liveness.heartbeat("sync", budget=0.3)
    rig.syncer.settings = SyncSettings(poll_interval=0.01, poll_jitter=0.0, backoff=FAST)
    async with serving(probes_for(rig, alive=liveness.problems)) as base:
        poller = asyncio.create_task(rig.syncer.poll())
        try:
            # A healthy loop beats every few milliseconds.
            assert await get_json(base + "/healthz") == (200, {"status": "ok"})
            # Every call now takes 60 s (GcpSource's call timeout is 5 s, but the loop must look stuck long
            # before that: the heartbeat's budget for one round is 0.3 s).
            set_faults(emulator, {"AccessSecretVersion": {"latency_ms": 60_000}})
            body = await wait_for_status(base + "/healthz", 503)
            assert body["problems"][0].startswith("sync: no heartbeat")
            # The stuck round does not affect readiness: values are fresh enough.
            assert (await get_json(base + "/readyz"))[0] == 200
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            clear_faults(emulator)


async def test_an_idle_poll_loop_is_alive(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    create_secret(client, "db-password", "db-v1")
    clock = ReadClock(0.0)
    liveness = Liveness(clock)
    heart = liveness.heartbeat("sync", budget=1.0)
    # A pinned version never changes: nothing to poll, the loop waits for a refresh request only.
    async with syncer_rig(
        emulator, [spec("db", "db-password", "1")], tmp_path / "out", heartbeat=heart
    ) as rig:
        await rig.bootstrap()
        app = build_probes_app(registry=rig.registry, ready=all_good, alive=liveness.problems)
        async with serving(app) as base:
            poller = asyncio.create_task(rig.syncer.poll())
            try:
                await asyncio.wait_for(clock.read.wait(), 10)  # the loop's first beat
                assert heart.due is None
                clock.advance(10**6)
                assert await get_json(base + "/healthz") == (200, {"status": "ok"})
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller


# --------------------------------------------------------------------------------------------------
# /readyz
# --------------------------------------------------------------------------------------------------


async def test_readyz_follows_the_first_fetch_max_staleness_and_recovery(
    rig: Rig, emulator: EmulatorEndpoints
) -> None:
    async with serving(probes_for(rig)) as base:
        status, body = await get_json(base + "/readyz")
        assert status == 503
        assert body == {"status": "not ready", "reasons": ["db: not fetched yet", "api: not fetched yet"]}

        await rig.bootstrap()
        assert await get_json(base + "/readyz") == (200, {"status": "ready"})

        rig.clock.advance(MAX_STALENESS + 1)
        status, body = await get_json(base + "/readyz")
        assert status == 503
        assert [reason.split(":")[0] for reason in body["reasons"]] == ["db", "api"]
        assert "max_staleness 60s" in body["reasons"][0]

        set_faults(emulator, {"*": {"unavailable": 1.0}})
        assert not await rig.syncer.check()
        assert (await get_json(base + "/readyz"))[0] == 503

        clear_faults(emulator)
        assert await rig.syncer.check()
        assert await get_json(base + "/readyz") == (200, {"status": "ready"})

        for path in ("/readyz", "/healthz", "/metrics"):
            assert CANARY not in (await get(base + path))[1]


# --------------------------------------------------------------------------------------------------
# /metrics
# --------------------------------------------------------------------------------------------------

FAMILIES = {
    "secrets_agent_fetches",
    "secrets_agent_fetch_duration_seconds",
    "secrets_agent_backend_errors",
    "secrets_agent_secret_version",
    "secrets_agent_last_success_timestamp_seconds",
    "secrets_agent_staleness_seconds",
    "secrets_agent_rotations",
    "secrets_agent_reload_notifications",
    "secrets_agent_endpoint_requests",
    "secrets_agent_ready",
    "secrets_agent_build_info",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "python_info",
}


async def test_metrics_are_served_in_the_prometheus_text_format(
    rig: Rig, emulator: EmulatorEndpoints
) -> None:
    await rig.bootstrap()
    set_faults(emulator, {"AccessSecretVersion": {"fail_next": 1, "fail_code": "UNAVAILABLE"}})
    assert not await rig.syncer.check(["db"])
    async with serving(probes_for(rig)) as base:
        status, text, headers = await get(base + "/metrics")

    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families.keys() >= FAMILIES

    def value(family: str, sample: str, **labels: str) -> float:
        return next(s.value for s in families[family].samples if s.name == sample and s.labels == labels)

    assert value("secrets_agent_fetches", "secrets_agent_fetches_total", secret="db", result="ok") == 1
    assert (
        value("secrets_agent_backend_errors", "secrets_agent_backend_errors_total", code="UNAVAILABLE") == 1
    )
    assert value("secrets_agent_secret_version", "secrets_agent_secret_version", secret="db") == 2
    assert value("secrets_agent_ready", "secrets_agent_ready") == 1
    assert CANARY not in text


async def test_metrics_speak_openmetrics_to_a_scraper_that_asks(rig: Rig) -> None:
    await rig.bootstrap()
    async with serving(probes_for(rig)) as base:
        status, text, headers = await get(
            base + "/metrics", {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
        )
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert text.endswith("# EOF\n")
        assert "secrets_agent_ready 1.0" in text

        # A nonsense Accept gets the classic format rather than an error.
        status, text, headers = await get(
            base + "/metrics", {"Accept": "application/openmetrics-text;version=x"}
        )
        assert status == 200
        assert "secrets_agent_ready" in text


async def test_the_listener_serves_only_the_three_probes_and_stops_when_cancelled(rig: Rig) -> None:
    async with serving(probes_for(rig)) as base:
        assert (await get(base + "/v1/secrets/api"))[0] == 404
        assert (await get(base + "/"))[0] == 404
        async with aiohttp.ClientSession() as session, session.post(base + "/metrics", data=b"x") as response:
            assert response.status == 405
        assert CANARY not in (await get(base + "/v1/secrets/api"))[1]
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(base + "/healthz")
