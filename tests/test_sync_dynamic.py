"""The set of secrets changes while the agent runs (selections): ``Syncer.add_specs`` and ``remove_specs``.

Each change is one commit: one ``..data`` swap carrying the files and the env file together, one publish, one
notification. A secret that fails to fetch is added all the same and polled; a secret leaves only when
asked to, and a check that was reading it when it left never brings it back. The real pipeline: the
emulator through the official client, the real sink on tmpfs, the real Syncer.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from dotenv import dotenv_values
from prometheus_client import CollectorRegistry

from agent.config import SecretSpec, TemplateSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Snapshot
from agent.core.retry import Backoff
from agent.core.store import SnapshotStore
from agent.errors import ConfigError
from agent.observe.metrics import Metrics
from agent.render.outputs import Renderer, RenderError
from agent.sinks.snapshot import SnapshotSink
from agent.sinks.tmpfs import filesystem_type
from agent.sources.gcp import GcpSource
from agent.sync import Syncer, SyncSettings
from agent_emulator.server import EmulatorEndpoints
from tests.conftest import grpc_client
from tests.e2e.conftest import PROJECT, Upstream

CANARY = "canary-dynamic-7b21e4-if-you-read-this-it-leaked"
"""The value of every secret ``c``: it must appear in no log line."""
ENV_FILE = "app.env"
FAST = Backoff(initial=0.001, maximum=0.005)
SHM = Path("/dev/shm")


def spec(name: str, secret_id: str | None = None, **options: object) -> SecretSpec:
    ref = parse_ref(f"projects/{PROJECT}/secrets/{secret_id or name}")
    return SecretSpec(name=name, ref=ref, **options)  # type: ignore[arg-type]


class CountingSink(SnapshotSink):
    """The real sink, counting the writes that swapped a new snapshot in; ``hold_next()`` makes the next
    write wait (in the writing thread, before writing) until ``release()``."""

    swaps = 0
    _armed = False
    _gate = threading.Event()
    entered = threading.Event()

    def hold_next(self) -> None:
        self._armed, self._gate, self.entered = True, threading.Event(), threading.Event()

    def release(self) -> None:
        self._gate.set()

    def write(self, snapshot: Snapshot) -> bool:
        hold, self._armed = self._armed, False
        if hold:
            self.entered.set()
            self._gate.wait(10)
        changed = super().write(snapshot)
        self.swaps += changed
        return changed


class HeldSource(GcpSource):
    """The real Secret Manager source; ``hold_next()`` makes the next fetch wait, after it has read its
    value from the emulator, until ``release()``."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint=endpoint)
        self._armed = False
        self.read = asyncio.Event()
        self.returned = asyncio.Event()
        self._released = asyncio.Event()

    def hold_next(self) -> None:
        self._armed = True

    def release(self) -> None:
        self._released.set()

    async def fetch(self, spec: SecretSpec) -> Fetched:
        hold, self._armed = self._armed, False
        fetched = await super().fetch(spec)
        if hold:
            self.read.set()
            await self._released.wait()
            self.returned.set()  # the check that called it finishes before anyone waiting for this runs
        return fetched


@dataclass
class Rig:
    upstream: Upstream
    source: HeldSource
    syncer: Syncer
    sink: CountingSink
    out: Path
    metrics: Metrics
    told: list[Snapshot] = field(default_factory=list)

    def file(self, path: str) -> bytes | None:
        target = self.out / path
        return target.read_bytes() if target.exists() else None

    def env(self) -> dict[str, str | None]:
        return dict(dotenv_values(stream=io.StringIO((self.out / ENV_FILE).read_text()), interpolate=False))

    def data_dir(self) -> str:
        return os.readlink(self.out / "..data")


class MakeRig(Protocol):
    async def __call__(
        self,
        specs: Sequence[SecretSpec],
        templates: Sequence[TemplateSpec] = (),
        settings: SyncSettings | None = None,
    ) -> Rig: ...


@pytest.fixture
def shm() -> Iterator[Path]:
    """A fresh directory on tmpfs (what a pod's ``emptyDir: {medium: Memory}`` gives), removed afterwards."""
    if filesystem_type(SHM) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    path = Path(tempfile.mkdtemp(prefix="sync-dynamic-", dir=SHM))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def make_rig(emulator: EmulatorEndpoints, shm: Path) -> AsyncIterator[MakeRig]:
    """``await make_rig(specs, templates, settings)``: a bootstrapped Syncer on a sink sharing its
    renderer (as the agent builds them), with Metrics on the store; every secret upstream holds
    ``<name>-1`` except ``c`` (the canary)."""
    upstream = Upstream(emulator, grpc_client(emulator.grpc_target))
    for name in ("base", "a", "b", "other"):
        upstream.create(name, f"{name}-1")
    upstream.create("c", CANARY)
    sources: list[HeldSource] = []

    async def make(
        specs: Sequence[SecretSpec],
        templates: Sequence[TemplateSpec] = (),
        settings: SyncSettings | None = None,
    ) -> Rig:
        source = HeldSource(emulator.grpc_target)
        sources.append(source)
        out = shm / f"out{len(sources)}"
        store = SnapshotStore(specs)
        metrics = Metrics(CollectorRegistry(), store=store)
        renderer = Renderer(specs, templates)
        sink = CountingSink(out, specs, Path(ENV_FILE), renderer=renderer)
        told: list[Snapshot] = []
        syncer = Syncer(
            specs,
            source,
            sink,
            store,
            settings or SyncSettings(backoff=FAST),
            on_change=[told.append],
            metrics=metrics,
            renderer=renderer,
        )
        report = await syncer.bootstrap(deadline=None)
        assert not report.failures
        sink.swaps = 0
        return Rig(upstream, source, syncer, sink, out, metrics, told)

    yield make
    for source in sources:
        await source.close()
    upstream.client.transport.close()


async def test_added_secrets_arrive_in_one_swap_with_one_notification(make_rig: MakeRig) -> None:
    rig: Rig = await make_rig([spec("base")])
    before = rig.data_dir()

    report = await rig.syncer.add_specs([spec("a"), spec("b"), spec("c")])

    assert report.added == ("a", "b", "c")
    assert report.failures == {}
    assert rig.sink.swaps == 1
    assert rig.data_dir() != before
    assert len(rig.told) == 1
    assert sorted(rig.told[0].versions()) == ["a", "b", "base", "c"]
    assert (rig.file("a"), rig.file("b"), rig.file("c")) == (b"a-1", b"b-1", CANARY.encode())
    assert rig.env() == {"BASE": "base-1", "A": "a-1", "B": "b-1", "C": CANARY}
    store = rig.syncer.store
    assert report.snapshot is store.snapshot
    assert {"a", "b", "c"} <= set(store.specs)
    assert {"a", "b", "c"} <= set(store.health)
    assert store.not_ready_reasons(60.0) == []
    assert rig.metrics.registry.get_sample_value("secrets_agent_secret_version", {"secret": "c"}) == 1.0


async def test_removed_secrets_leave_in_one_swap_with_a_log_line_each(
    make_rig: MakeRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig: Rig = await make_rig([spec("base"), spec("a"), spec("c")])
    registry = rig.metrics.registry
    assert registry.get_sample_value("secrets_agent_fetches_total", {"secret": "c", "result": "ok"}) == 1.0
    before = rig.data_dir()

    with caplog.at_level(logging.INFO, logger="agent.sync"):
        snapshot = await rig.syncer.remove_specs(["a", "c"], reason="no longer selected by 'payments'")

    assert rig.sink.swaps == 1
    assert rig.data_dir() != before
    assert len(rig.told) == 1
    assert rig.told[0] is snapshot
    assert sorted(snapshot.versions()) == ["base"]
    assert rig.file("a") is None
    assert rig.file("c") is None
    assert rig.file("base") == b"base-1"
    assert rig.env() == {"BASE": "base-1"}
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed secret")]
    assert removed == [
        "removed secret 'a' (no longer selected by 'payments')",
        "removed secret 'c' (no longer selected by 'payments')",
    ]
    assert CANARY not in caplog.text
    store = rig.syncer.store
    assert set(rig.syncer.specs) == set(store.specs) == set(store.health) == {"base"}
    for name in ("a", "c"):  # their series are gone, freshness included
        assert registry.get_sample_value("secrets_agent_secret_version", {"secret": name}) is None
        assert (
            registry.get_sample_value("secrets_agent_fetches_total", {"secret": name, "result": "ok"}) is None
        )
        assert registry.get_sample_value("secrets_agent_rotations_total", {"secret": name}) is None
        assert registry.get_sample_value("secrets_agent_staleness_seconds", {"secret": name}) is None
    assert registry.get_sample_value("secrets_agent_secret_version", {"secret": "base"}) == 1.0


async def test_a_new_secret_that_cannot_be_fetched_is_added_reported_and_polled(make_rig: MakeRig) -> None:
    rig: Rig = await make_rig([spec("base")])

    report = await rig.syncer.add_specs([spec("a"), spec("late"), spec("b")])  # "late" does not exist yet

    assert set(report.failures) == {"late"}
    assert report.failures["late"].code == "NOT_FOUND"
    assert rig.sink.swaps == 1
    assert len(rig.told) == 1
    assert (rig.file("a"), rig.file("b"), rig.file("late")) == (b"a-1", b"b-1", None)
    assert "late" in rig.syncer.specs
    health = rig.syncer.store.health["late"]
    assert health.last_error is not None
    assert health.last_error.code == "NOT_FOUND"
    assert rig.syncer.store.not_ready_reasons(60.0) == ["late: not fetched yet"]

    rig.upstream.create("late", "late-1")
    assert await rig.syncer.check()  # a missing secret is checked by every round
    assert rig.file("late") == b"late-1"
    assert rig.env()["LATE"] == "late-1"
    assert rig.syncer.store.not_ready_reasons(60.0) == []


async def test_transient_failures_of_new_secrets_are_retried_until_the_deadline(make_rig: MakeRig) -> None:
    rig: Rig = await make_rig([spec("base")])
    rig.upstream.set_faults({"AccessSecretVersion": {"fail_next": 2, "fail_code": "UNAVAILABLE"}})
    report = await rig.syncer.add_specs([spec("a")], deadline=time.monotonic() + 10)
    assert report.failures == {}  # two failures, then it worked: retried as the bootstrap retries
    assert rig.file("a") == b"a-1"

    rig.upstream.set_faults({"AccessSecretVersion": {"fail_next": 1000, "fail_code": "UNAVAILABLE"}})
    report = await rig.syncer.add_specs([spec("b")], deadline=time.monotonic() + 0.2)
    assert set(report.failures) == {"b"}
    # Out of time between attempts, or during the last one.
    assert report.failures["b"].code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert "b" in rig.syncer.specs
    assert rig.file("b") is None
    rig.upstream.clear_faults()
    assert await rig.syncer.check()
    assert rig.file("b") == b"b-1"


async def test_a_removal_while_a_check_reads_the_secret_does_not_bring_it_back(make_rig: MakeRig) -> None:
    rig: Rig = await make_rig([spec("base"), spec("a")])
    rig.upstream.add("a", "a-2")
    rig.source.hold_next()
    slow = asyncio.create_task(rig.syncer.check(["a"]))
    await asyncio.wait_for(rig.source.read.wait(), 10)  # the check has read a@2 and is held

    await rig.syncer.remove_specs(["a"], reason="no longer selected by 'payments'")
    rig.source.release()
    assert await slow

    assert rig.file("a") is None
    assert "A" not in rig.env()
    assert rig.syncer.store.snapshot.get("a") is None
    assert "a" not in rig.syncer.store.health
    assert rig.sink.swaps == 1
    assert len(rig.told) == 1
    registry = rig.metrics.registry
    assert registry.get_sample_value("secrets_agent_fetches_total", {"secret": "a", "result": "ok"}) is None


async def test_a_read_finished_before_a_removal_committed_is_dropped_at_its_own_commit(
    make_rig: MakeRig, caplog: pytest.LogCaptureFixture
) -> None:
    """The check has its new value in hand (the secret was still served when it came back) and waits for
    the commit the removal is making: it must not commit it after the removal."""
    rig: Rig = await make_rig([spec("base"), spec("a")])
    rig.upstream.add("a", "a-2")
    rig.source.hold_next()
    slow = asyncio.create_task(rig.syncer.check(["a"]))
    await asyncio.wait_for(rig.source.read.wait(), 10)
    rig.sink.hold_next()
    removal = asyncio.create_task(rig.syncer.remove_specs(["a"], reason="relabelled"))
    assert await asyncio.to_thread(rig.sink.entered.wait, 10)  # the removal is writing, under the lock
    rig.source.release()
    await asyncio.wait_for(rig.source.returned.wait(), 10)  # the check's result is in; its commit waits
    assert "a" in rig.syncer.specs
    with caplog.at_level(logging.DEBUG, logger="agent.sync"):
        rig.sink.release()
        await removal
        assert await slow

    assert "dropping a@2: no longer served as it was read" in caplog.messages
    assert rig.file("a") is None
    assert rig.syncer.store.snapshot.get("a") is None
    assert rig.sink.swaps == 1
    assert len(rig.told) == 1


async def test_a_read_of_a_secret_removed_and_added_again_elsewhere_is_dropped(make_rig: MakeRig) -> None:
    rig: Rig = await make_rig([spec("base"), spec("a")])
    rig.upstream.add("a", "a-2")
    rig.source.hold_next()
    slow = asyncio.create_task(rig.syncer.check(["a"]))
    await asyncio.wait_for(rig.source.read.wait(), 10)

    await rig.syncer.remove_specs(["a"], reason="relabelled")
    await rig.syncer.add_specs([spec("a", "other")])  # the same name, now another secret
    rig.source.release()
    assert await slow

    assert rig.file("a") == b"other-1"  # not a-2, read for the secret that left
    served = rig.syncer.store.snapshot.get("a")
    assert served is not None
    assert served.data == b"other-1"


async def test_templates_that_see_every_secret_see_the_added_ones(make_rig: MakeRig) -> None:
    templates = [
        TemplateSpec(name="all", file="all.json", format="json"),
        TemplateSpec(
            name="listing",
            file="listing.txt",
            text="{% for name in secrets %}{{ name }}={{ secrets[name].value }};{% endfor %}",
        ),
        TemplateSpec(name="only-base", file="base.txt", text="{{ secrets.base.value }}", secrets=("base",)),
        TemplateSpec(name="payments", file="payments.env", format="dotenv", select=("payments",)),
    ]
    rig: Rig = await make_rig([spec("base")], templates)
    assert json.loads(rig.file("all.json") or b"") == {"base": "base-1"}
    assert rig.file("listing.txt") == b"base=base-1;"

    await rig.syncer.add_specs([spec("a"), spec("b")], origins={"b": "payments"})

    assert rig.sink.swaps == 1
    assert len(rig.told) == 1
    assert json.loads(rig.file("all.json") or b"") == {"base": "base-1", "a": "a-1", "b": "b-1"}
    assert rig.file("listing.txt") == b"a=a-1;b=b-1;base=base-1;"
    assert rig.file("base.txt") == b"base-1"
    assert dotenv_values(stream=io.StringIO((rig.file("payments.env") or b"").decode())) == {"B": "b-1"}

    await rig.syncer.remove_specs(["b"], reason="no longer selected by 'payments'")
    assert json.loads(rig.file("all.json") or b"") == {"base": "base-1", "a": "a-1"}
    assert rig.file("listing.txt") == b"a=a-1;base=base-1;"
    assert dotenv_values(stream=io.StringIO((rig.file("payments.env") or b"").decode())) == {}


async def test_the_poll_loop_starts_polling_secrets_added_after_it_found_none(make_rig: MakeRig) -> None:
    pinned = SecretSpec(name="base", ref=parse_ref(f"projects/{PROJECT}/secrets/base/versions/1"))
    rig: Rig = await make_rig(
        [pinned], settings=SyncSettings(poll_interval=0.05, poll_jitter=0, backoff=FAST)
    )
    loop = asyncio.create_task(rig.syncer.poll())
    try:
        await rig.syncer.add_specs([spec("a")])
        rig.upstream.add("a", "a-2")

        async def rotated() -> None:
            store = rig.syncer.store
            while (item := store.snapshot.get("a")) is None or item.version != "2":
                await store.wait_for_generation(store.generation, 10)

        await asyncio.wait_for(rotated(), 10)
        assert rig.file("a") == b"a-2"
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_what_add_and_remove_refuse_changes_nothing(make_rig: MakeRig) -> None:
    templates = [TemplateSpec(name="t", file="t.txt", text="{{ secrets.a.value }}", secrets=("a",))]
    rig: Rig = await make_rig([spec("base"), spec("a")], templates)
    rig.upstream.reset_counters()
    before = rig.data_dir()

    with pytest.raises(ValueError, match="already served: a"):
        await rig.syncer.add_specs([spec("b"), spec("a")])
    with pytest.raises(ValueError, match="given twice: b"):
        await rig.syncer.add_specs([spec("b"), spec("b", "other")])
    with pytest.raises(ValueError, match="both take file 'base'"):
        await rig.syncer.add_specs([spec("b", file="base")])
    with pytest.raises(ValueError, match="both take env 'BASE'"):
        await rig.syncer.add_specs([spec("b", env="BASE")])
    with pytest.raises(ConfigError, match="key"):
        await rig.syncer.add_specs([spec("b", key="a[")])
    assert rig.upstream.total_calls() == 0  # refused before any call upstream

    with pytest.raises(ValueError, match="not served: nope"):
        await rig.syncer.remove_specs(["base", "nope"], reason="test")
    with pytest.raises(ConfigError, match="no secret is named 'a'"):
        await rig.syncer.remove_specs(["a"], reason="test")  # template 't' names it

    # A new secret that makes the snapshot fail to render (a key its payload does not have) is not added.
    with pytest.raises(RenderError, match="secret 'b'"):
        await rig.syncer.add_specs([spec("b", format="json", key="password")])

    assert set(rig.syncer.specs) == set(rig.syncer.store.specs) == {"base", "a"}
    assert rig.data_dir() == before
    assert rig.sink.swaps == 0
    assert rig.told == []
    assert [plan.owner for plan in rig.syncer.renderer.plans] == ["base", "a", "t"]
    assert await rig.syncer.check()  # and everything still works as before
    assert rig.file("t.txt") == b"a-1"
