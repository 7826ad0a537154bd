"""The loop: bootstrap every secret, then keep them fresh (poll with jitter, or follow a change feed).

No I/O details live here: a Source fetches, a Sink writes, the SnapshotStore remembers, callbacks tell the
app. The rules that matter are here:

* a snapshot is committed whole: written by the sink first, then published, then the app is told once;
* last-known-good wins: a failed fetch keeps the old value (never removed from disk), is recorded, retried;
* only ``latest`` and aliases are polled: a pinned version number cannot change, so it costs no calls;
* what local callers can make it ask upstream is bounded: forced rounds (SIGHUP, ``POST /v1/refresh``) are
  coalesced (one in flight, at most one queued) and start at least ``refresh_min_interval`` apart;
* the set of secrets may change while running (selections: ``add_specs``, ``remove_specs``), each change in
  one commit (one swap, one notification); a secret leaves only when asked to, never because it failed, and
  a check that was in flight for it when it left cannot bring it back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from agent.config import SecretSpec
from agent.core.model import Fetched, Snapshot
from agent.core.retry import Backoff, RepeatedFailures, retry_transient
from agent.core.store import SnapshotStore
from agent.core.words import plural
from agent.errors import PermanentSourceError, SinkError, SourceError
from agent.render.outputs import Renderer, RenderError
from agent.sinks import Sink
from agent.sources import ChangeFeed, Source
from agent.sources.errors import source_error

if TYPE_CHECKING:  # the metrics module brings prometheus_client: init and exec use no metrics
    from agent.observe.metrics import FetchResult, Heartbeat, Metrics

log = logging.getLogger(__name__)

Strategy = Literal["access", "metadata"]

ADD_TIMEOUT = 60.0
"""Seconds ``add_specs`` retries the first fetch of new secrets when given no deadline (``Config.timeout``'s
default): past it, a secret that still fails is added anyway and retried by polling, like any failed one."""

REFRESH_MIN_INTERVAL = 1.0
"""Default ``SyncSettings.refresh_min_interval``: a second is as fast as a person or a deploy script asks, and
bounds a refresh loop in a hostile or broken local process to one round per second."""


def is_polled(spec: SecretSpec) -> bool:
    """``latest`` and aliases can move; a version number never does."""
    return not spec.ref.version.isdigit()


@dataclass(frozen=True)
class SyncSettings:
    concurrency: int = 100
    """Fetches in flight at once (``Config.concurrency`` says why 100)."""
    poll_interval: float = 300.0
    """Seconds between checks of the polled secrets."""
    poll_jitter: float = 0.1
    """Each interval is multiplied by a random factor in [1 - jitter, 1 + jitter]."""
    polling: bool = True
    """False when a change feed (the watched .env file) makes polling pointless: only refresh_now checks."""
    strategy: Strategy = "access"
    """``access``: read ``latest`` each time; ``metadata``: read its version number, access only on change."""
    backoff: Backoff = field(default_factory=Backoff)
    """Retry schedule for transient failures (bootstrap) and for rounds that failed (polling)."""
    refresh_min_interval: float = REFRESH_MIN_INTERVAL
    """Seconds from the start of one forced round (SIGHUP, ``POST /v1/refresh``) to the start of the next.
    However often a local caller asks, forced rounds then cost at most one check of every polled secret per
    interval upstream."""


@dataclass
class BootstrapReport:
    """What a bootstrap fetched and what failed (by local name)."""

    snapshot: Snapshot
    failures: dict[str, SourceError]

    def required_failures(self, specs: Sequence[SecretSpec]) -> dict[str, SourceError]:
        required = {spec.name for spec in specs if spec.required}
        return {name: error for name, error in self.failures.items() if name in required}


@dataclass
class AddReport:
    """What ``add_specs`` committed, and the new secrets that could not be fetched (by local name): they are
    served from now on all the same (not fetched yet: 503 at the endpoint, no file), and retried by polling
    like any failed secret."""

    snapshot: Snapshot
    added: tuple[str, ...]
    """The local names added, in the order given."""
    failures: dict[str, SourceError]


OnChange = Callable[[Snapshot], None]

_Checked = tuple[Fetched, Fetched | None, SecretSpec]
"""A value read by a check, the value served when the check started (its base), the spec it read for."""


class Syncer:
    def __init__(
        self,
        specs: Sequence[SecretSpec],
        source: Source,
        sink: Sink,
        store: SnapshotStore,
        settings: SyncSettings,
        *,
        on_change: Sequence[OnChange] = (),
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        heartbeat: Heartbeat | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        """``metrics``: counts fetches, backend errors, versions and rotations; ``heartbeat``: beaten by
        each iteration of ``poll()`` (liveness); ``renderer``: turns each snapshot into its outputs (files,
        keys, templates) before it is written (default: the secrets' own outputs)."""
        self.specs = {spec.name: spec for spec in specs}
        self.source = source
        self.sink = sink
        self.store = store
        self.settings = settings
        self.on_change = list(on_change)
        self.metrics = metrics
        self.heartbeat = heartbeat
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._commit_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._refresh_requested = False  # a forced round is queued (asked for, not started yet)
        self._last_forced: float | None = None  # time.monotonic() when the last forced round started
        self._replan_requested = False
        self._poll_interval_override: float | None = None  # set_poll_interval(); None: the settings'
        self._write_failed = False
        self._failures = RepeatedFailures()
        self.renderer = renderer if renderer is not None else Renderer(specs)
        self._render_failure: str | None = None  # the RenderError last reported (each is logged once)
        self._adding: set[str] = set()  # names add_specs is fetching (refused to a second add or a remove)

    # -- bootstrap --------------------------------------------------------------------------------

    async def bootstrap(self, deadline: float | None, *, notify: bool = False) -> BootstrapReport:
        """Fetch every secret concurrently (retrying transient failures until ``deadline``, a
        ``time.monotonic()`` value) and commit what was fetched on top of what is already on disk.

        ``notify``: tell the app when this changed the files (a sidecar starting next to a running app).
        Raises SinkError when the snapshot cannot be written.
        """
        specs = dict(self.specs)  # as they are now: secrets may come and go while this fetches
        bases = {name: self.store.snapshot.get(name) for name in specs}
        results = await asyncio.gather(*(self._fetch(spec, deadline) for spec in specs.values()))
        fetched = [_keep_content_tag(r, bases[r.name]) for r in results if isinstance(r, Fetched)]
        failures = {
            spec.name: r
            for spec, r in zip(specs.values(), results, strict=True)
            if isinstance(r, SourceError)
        }
        for name, error in failures.items():
            if self.specs.get(name) == specs[name]:
                self.store.record_failure(name, error)
        async with self._commit_lock:
            fresh = self._not_overtaken([(f, bases[f.name], specs[f.name]) for f in fetched])
            snapshot = await self._commit(fresh, notify=notify)
        return BootstrapReport(snapshot, failures)

    # -- the set of secrets changes ---------------------------------------------------------------

    async def add_specs(
        self,
        specs: Sequence[SecretSpec],
        deadline: float | None = None,
        *,
        origins: Mapping[str, str] | None = None,
    ) -> AddReport:
        """Serve ``specs`` too: fetch them concurrently (the fetch slots are shared with every check;
        transient failures retried with the backoff until ``deadline``, a ``time.monotonic()`` value,
        default ``ADD_TIMEOUT`` from now), then commit ONCE: one write (their files and env entries with the
        rest), one publish, one notification. Templates that see every secret (or their selection, named in
        ``origins``: local name -> ``select[].name``) see them from this snapshot on.

        A new secret that could not be fetched is added all the same and reported: polling retries it (and
        the poll loop starts polling when these are the first secrets it has to poll).

        Raises, having changed nothing: ValueError for a name already served (or being added), or an output
        that takes another's file or env variable (the caller resolves collisions first); ConfigError for an
        output the renderer refuses (a bad key), both before any call upstream; RenderError or SinkError when
        the snapshot with them cannot be rendered or written (the old one stays whole, on disk and served).
        """
        new = list(specs)
        names = [spec.name for spec in new]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"secrets given twice: {', '.join(repeated)}")
        taken = sorted(n for n in names if n in self.specs or n in self.store.specs or n in self._adding)
        if taken:
            raise ValueError(f"secrets already served: {', '.join(taken)}")
        if not new:
            return AddReport(self.store.snapshot, (), {})
        added_origins = {name: origin for name, origin in (origins or {}).items() if name in names}
        # Checked now, before any call upstream; taken under the commit lock below (a render may be running).
        self.renderer.check_replan([*self.specs.values(), *new], {**self.renderer.origins, **added_origins})
        self._adding.update(names)
        try:
            deadline = time.monotonic() + ADD_TIMEOUT if deadline is None else deadline
            results = await asyncio.gather(*(self._fetch(spec, deadline) for spec in new))
            fetched = [r for r in results if isinstance(r, Fetched)]
            failures = {
                spec.name: r for spec, r in zip(new, results, strict=True) if isinstance(r, SourceError)
            }
            async with self._commit_lock:
                everything = [*self.specs.values(), *new]
                undo = self.renderer.replan(everything, {**self.renderer.origins, **added_origins})

                adopted = False

                def adopt() -> None:
                    nonlocal adopted
                    adopted = True
                    self.specs.update({spec.name: spec for spec in new})
                    self.store.add_specs(new)
                    for name, error in failures.items():
                        self.store.record_failure(name, error)
                    if self.metrics is not None:
                        self.metrics.known_secrets(names)

                try:
                    snapshot = await self._commit(fetched, notify=True, adopt=adopt)
                except BaseException as error:  # cancelled too: the plans go back with the specs
                    if not adopted:
                        undo()
                        self._commit_failed(error)
                        for name in names:
                            self._failures.succeeded(name)  # not served: no streak of failures to go on
                    raise
        finally:
            self._adding.difference_update(names)
        log.info(
            "added %s: %s%s",
            plural(len(names), "secret"),
            ", ".join(names),
            f" ({len(failures)} not fetched yet, retried by polling: {', '.join(failures)})"
            if failures
            else "",
        )
        self._specs_changed()
        return AddReport(snapshot, tuple(names), failures)

    async def remove_specs(self, names: Collection[str], *, reason: str) -> Snapshot:
        """Stop serving ``names``, for ``reason`` (``no longer selected by 'payments'``; logged once per
        secret with its name, never a value): one commit drops their values, files and env entries (and what
        templates made of them) in one swap, one notification; their failure records and metric series go.
        A check in flight for one of them when it goes is dropped when it ends (it never brings it back).
        Returns the snapshot committed.

        Raises, having changed nothing: ValueError for a name not served (or still being added);
        ConfigError when a template names one of them in its ``secrets``; RenderError or SinkError when the
        snapshot without them cannot be rendered or written (they stay, whole, on disk and served; ask
        again)."""
        gone = list(dict.fromkeys(names))
        unknown = sorted(name for name in gone if name not in self.specs)
        if unknown:
            raise ValueError(f"secrets not served: {', '.join(unknown)}")
        if not gone:
            return self.store.snapshot
        async with self._commit_lock:
            # Checked again: a remove_specs that waited for the lock may have taken some of them.
            unknown = sorted(name for name in gone if name not in self.specs)
            if unknown:
                raise ValueError(f"secrets not served: {', '.join(unknown)}")
            kept = [spec for name, spec in self.specs.items() if name not in gone]
            undo = self.renderer.replan(kept)

            adopted = False

            def adopt() -> None:
                nonlocal adopted
                adopted = True
                for name in gone:
                    del self.specs[name]
                    self._failures.succeeded(name)
                    if self.metrics is not None:
                        self.metrics.forget_secret(name)
                self.store.remove_specs(gone)

            try:
                snapshot = await self._commit(
                    (), notify=True, base=self.store.snapshot.without(gone), adopt=adopt
                )
            except BaseException as error:  # cancelled too: the plans go back with the specs
                if not adopted:
                    undo()
                    self._commit_failed(error)
                raise
        for name in gone:
            log.info("removed secret %r (%s)", name, reason)
        self._specs_changed()
        return snapshot

    def _commit_failed(self, error: BaseException) -> None:
        """A snapshot changing the set of secrets was not committed; the caller is told (it raises)."""
        if isinstance(error, RenderError) and self.metrics is not None:
            self.metrics.render_failed()

    def _specs_changed(self) -> None:
        """The poll loop re-plans its wait: it may have secrets to poll now, or none."""
        self._replan_requested = True
        self._wake.set()

    async def _fetch(self, spec: SecretSpec, deadline: float | None) -> Fetched | SourceError:
        def retrying(error: SourceError, attempt: int, delay: float) -> None:
            held_back = self._failures.failed(spec.name, error.code)
            if held_back is not None:
                log.warning(
                    "fetching %s failed (%s), retry %d in %.1fs%s",
                    spec.name,
                    error.code,
                    attempt + 1,
                    delay,
                    _held_back(held_back),
                )

        async def once() -> Fetched:
            if deadline is None:
                async with self._limit:
                    return await self._timed_fetch(spec)
            # The deadline bounds each attempt too (waiting for a slot included): a backend that accepts
            # calls and never answers would otherwise hold init for the per-call timeout, past --timeout.
            loop = asyncio.get_running_loop()
            attempt_started = time.monotonic()
            try:
                async with asyncio.timeout_at(loop.time() + (deadline - time.monotonic())):
                    async with self._limit:
                        return await self._timed_fetch(spec)
            except TimeoutError:
                error = source_error(
                    str(spec.ref),
                    "DEADLINE_EXCEEDED",
                    "no answer before the bootstrap deadline",
                    hint="the backend is slow or unreachable; raise the timeout setting if this persists",
                )
                # The cancelled call recorded nothing; this attempt still counts as a failed fetch.
                self._observe(spec.name, "error", attempt_started, error)
                raise error from None

        try:
            return await retry_transient(
                once, backoff=self.settings.backoff, deadline=deadline, attempts=None, on_retry=retrying
            )
        except SourceError as error:
            return error

    async def _timed_fetch(self, spec: SecretSpec) -> Fetched:
        """``source.fetch`` (the caller holds a slot), counted and timed in the metrics."""
        started = time.monotonic()
        try:
            fetched = await self.source.fetch(spec)
        except SourceError as error:
            self._observe(spec.name, "error", started, error)
            raise
        unchanged = fetched.same_value(self.store.snapshot.get(spec.name))
        self._observe(spec.name, "unchanged" if unchanged else "ok", started)
        return fetched

    def _observe(
        self, name: str, result: FetchResult, started: float, error: SourceError | None = None
    ) -> None:
        if self.metrics is None:
            return
        if name not in self.specs and name not in self._adding:
            return  # removed while it was read: its series are gone and stay gone
        self.metrics.fetch(name, result, time.monotonic() - started)
        if error is not None:
            self.metrics.backend_error(error.code)

    # -- keeping fresh ----------------------------------------------------------------------------

    def refresh_now(self) -> None:
        """Queue a forced round: check every polled secret as soon as allowed (SIGHUP).

        Never refused, and never more than one: asked while a round is queued, it joins that round; asked
        less than ``refresh_min_interval`` after the last forced round started, the queued round waits for
        the interval to pass. A storm of signals thus costs at most one round per interval.
        """
        self._refresh_requested = True
        self._wake.set()

    def request_refresh(self) -> float | None:
        """Ask for a forced round on behalf of a caller who can be told to come back (``POST /v1/refresh``).

        None: a forced round is queued that starts after this call (a new one, or the one already waiting,
        which this request joins). Otherwise nothing is queued and the answer is how many seconds remain until
        ``refresh_min_interval`` has passed since the last forced round started (the 429's Retry-After).
        """
        if not self._refresh_requested:
            wait = self._refresh_wait(time.monotonic())
            if wait > 0:
                return wait
        self.refresh_now()
        return None

    def _refresh_wait(self, now: float) -> float:
        """Seconds until a forced round may start (0: now)."""
        if self._last_forced is None:
            return 0.0
        return max(0.0, self._last_forced + self.settings.refresh_min_interval - now)

    @property
    def poll_interval(self) -> float:
        """Seconds between polls now: ``settings.poll_interval`` unless ``set_poll_interval`` changed it."""
        override = self._poll_interval_override
        return override if override is not None else self.settings.poll_interval

    def set_poll_interval(self, seconds: float) -> None:
        """Poll every ``seconds`` from now on (events up: a long safety interval; down: the normal one).

        The wait in progress is re-planned without checking anything now: the next check comes one new
        (jittered) interval from now; for a shorter interval, sooner if it was planned sooner. So a Pub/Sub
        outage seen by a whole fleet at once does not become a burst of Secret Manager calls (the jitter
        spreads them), and events coming back cancel the short wait (they catch up by themselves).
        """
        if seconds <= 0:
            raise ValueError(f"poll interval must be positive, got {seconds}")
        if seconds == self.poll_interval:
            return
        self._poll_interval_override = seconds
        self._replan_requested = True
        self._wake.set()

    async def check(self, names: Collection[str] | None = None) -> bool:
        """One round: check ``names`` (default: every polled secret), commit what changed.

        Returns True when the round fully succeeded (every check and the write, if any).
        """
        specs = [
            spec
            for name, spec in self.specs.items()
            if (name in names if names is not None else is_polled(spec) or self._missing(name))
        ]
        results = await asyncio.gather(*(self._check_one(spec) for spec in specs))
        changed = [(*r, spec) for spec, r in zip(specs, results, strict=True) if isinstance(r, tuple)]
        ok = all(r is not False for r in results)
        if changed or self._write_failed:
            async with self._commit_lock:
                try:
                    await self._commit(self._not_overtaken(changed), notify=True)
                except RenderError as error:
                    # Not retried: the same values would fail the same way. The next version (an event or a
                    # poll) renders again; until then the old snapshot stays, and goes stale.
                    self._report_render_failure(error)
                    return False
                except SinkError as error:
                    # The old snapshot is intact on disk and in the store; the next round writes again.
                    self._write_failed = True
                    log.error("writing the new snapshot failed, keeping the previous one: %s", error)
                    return False
        return ok

    def _missing(self, name: str) -> bool:
        return self.store.snapshot.get(name) is None

    def _not_overtaken(self, results: Sequence[_Checked]) -> list[Fetched]:
        """Each result with the value the store held when its check started (its base), less those an
        overlapping check has overtaken. Call it under the commit lock, right before ``_commit``.

        Checks overlap (an event and the safety poll, a refresh and a poll) and finish in any order, and
        neither start order nor finish order is read order (latency comes before the backend reads; a result
        waits in its round for the round's slowest fetch). So when something was committed for a secret
        while a check of it was in flight, a result with a lower version number than the one now served is
        an older read and is dropped: a secret is never put back. Version numbers are compared only then:
        without a concurrent commit a lower number is news (an alias moved back, a secret re-created).

        A result for a secret removed while it was read (``remove_specs``), or removed and added again with
        other settings, is dropped too: it is not the secret served now."""
        fresh = []
        for fetched, base, spec in results:
            if self.specs.get(fetched.name) != spec:
                log.debug("dropping %s@%s: no longer served as it was read", fetched.name, fetched.version)
                continue
            now = self.store.snapshot.get(fetched.name)
            overtaken = (
                now is not None
                and now is not base
                and now.version.isdigit()
                and fetched.version.isdigit()
                and int(fetched.version) < int(now.version)
            )
            if overtaken:
                log.debug("dropping %s@%s: a newer read was already served", fetched.name, fetched.version)
                continue
            fresh.append(fetched)
        return fresh

    async def _check_one(self, spec: SecretSpec) -> tuple[Fetched, Fetched | None] | bool:
        """A changed value with the value served when the check started, True (unchanged) or False (failed;
        last-known-good kept)."""
        current = self.store.snapshot.get(spec.name)
        async with self._limit:
            started = time.monotonic()
            try:
                changed = await self._ask_backend(spec, current)
            except SourceError as error:
                self._observe(spec.name, "error", started, error)
                self._record_failure(spec, error)
                return False
            self._observe(spec.name, "unchanged" if changed is None else "ok", started)
        if self.specs.get(spec.name) != spec:
            return True  # removed while it was checked: nothing to record, nothing to commit
        if changed is None:
            # A new value counts as fresh once it is written (_commit): one that cannot be (an output that
            # fails to render, a full volume) leaves the old one serving, growing stale towards /readyz.
            self.store.record_success(spec.name)
        failures = self._failures.succeeded(spec.name)
        if failures:
            log.info("checking %s works again after %s", spec.name, plural(failures, "failed attempt"))
        return True if changed is None else (changed, current)

    async def _ask_backend(self, spec: SecretSpec, current: Fetched | None) -> Fetched | None:
        """The new value of ``spec``, or None when the backend confirms ``current``."""
        if (
            self.settings.strategy == "metadata"
            and current is not None
            and await self.source.current_version(spec) == current.version
        ):
            return None
        fetched = _keep_content_tag(await self.source.fetch(spec), current)
        return None if fetched.same_value(current) else fetched

    def _record_failure(self, spec: SecretSpec, error: SourceError) -> None:
        if self.specs.get(spec.name) != spec:
            return  # removed while it was checked
        self.store.record_failure(spec.name, error)
        held_back = self._failures.failed(spec.name, error.code)
        if held_back is None:
            return
        kind = "permanent" if isinstance(error, PermanentSourceError) else "transient"
        has_value = self.store.snapshot.get(spec.name) is not None
        log.warning(
            "checking %s failed (%s, %s): %s%s%s%s",
            spec.name,
            kind,
            error.code,
            error.message,
            f" (hint: {error.hint})" if error.hint else "",
            "; keeping the last known good value" if has_value else "",
            _held_back(held_back),
        )

    async def _commit(
        self,
        fetched: Sequence[Fetched],
        *,
        notify: bool,
        base: Snapshot | None = None,
        adopt: Callable[[], None] | None = None,
    ) -> Snapshot:
        """Write ``fetched`` on top of the current snapshot (or of ``base``: the current one less removed
        secrets), publish it, and tell the app if it changed. ``adopt``: the change of the set of secrets
        this snapshot carries, made once it is written and in the same step as it is published (never when
        the write fails), so that the store, the endpoint and the disk agree at every moment."""
        previous = self.store.snapshot
        start = previous if base is None else base
        snapshot, wrote = await asyncio.to_thread(self._render_and_write, start.with_updates(fetched))
        if adopt is not None:
            adopt()
        self._write_failed = False
        if self._render_failure is not None:
            self._render_failure = None
            log.info("every output renders again")
        await self.store.publish(snapshot)
        for item in fetched:
            self.store.record_success(item.name)
        moved = {f.name: f.version for f in fetched if not f.same_value(previous.get(f.name))}
        if self.metrics is not None:
            for item in snapshot:
                self.metrics.served_version(item.name, item.version)
            for name in moved:
                if previous.get(name) is not None:  # a first fetch is not a rotation
                    self.metrics.rotation(name)
        if moved:
            log.info("snapshot updated: %s", ", ".join(f"{n}@{v}" for n, v in sorted(moved.items())))
        if notify and (wrote or moved):
            for callback in self.on_change:
                callback(snapshot)
        return snapshot

    def _render_and_write(self, snapshot: Snapshot) -> tuple[Snapshot, bool]:
        rendered = self.renderer.render(snapshot)
        return rendered, self.sink.write(rendered)

    def _report_render_failure(self, error: RenderError) -> None:
        if str(error) != self._render_failure:
            log.error("%s", error)
            self._render_failure = str(error)
        if self.metrics is not None:
            self.metrics.render_failed()

    async def poll(self) -> None:
        """Check polled secrets every interval (with jitter) until cancelled; failed rounds retry sooner.

        A forced round (``refresh_now``) starts as soon as ``refresh_min_interval`` has passed since the last
        one started; a round that starts while one is queued serves it (it reads after it was asked for).
        """
        polled = self._polled()
        if not polled:
            log.info("nothing to poll: only a refresh request or a missing secret triggers a check")
        failures = 0
        while True:
            delay = self._next_delay(failures, polled)
            due = None if delay is None else time.monotonic() + delay
            planned_with = self.poll_interval
            while True:
                now = time.monotonic()
                wake_at = now + self._refresh_wait(now) if self._refresh_requested else None
                if due is not None:
                    wake_at = due if wake_at is None else min(wake_at, due)
                remaining = None if wake_at is None else max(0.0, wake_at - time.monotonic())
                if self.heartbeat is not None:
                    self.heartbeat.beat(remaining)  # None: idle until woken, which is alive
                if not await self._wait_for_wake(remaining):
                    break  # the round was due, or the queued forced round may start now
                if self._replan_requested:
                    self._replan_requested = False
                    polled = self._polled()  # secrets may have come or gone (add_specs, remove_specs)
                    due = self._replanned(due, failures, polled, longer=self.poll_interval > planned_with)
                    planned_with = self.poll_interval
                if self._refresh_requested and self._refresh_wait(time.monotonic()) <= 0:
                    break
            if self._refresh_requested:
                self._refresh_requested = False
                self._last_forced = time.monotonic()
            if self.heartbeat is not None:
                self.heartbeat.beat()  # the round that starts now must end within the heartbeat's budget
            ok = await self.check()
            failures = 0 if ok else failures + 1

    def _polled(self) -> bool:
        return self.settings.polling and any(is_polled(spec) for spec in self.specs.values())

    def _next_delay(self, failures: int, polled: bool) -> float | None:
        """Seconds from the end of the last round to the next one; None: only when woken."""
        if failures:
            return min(self.poll_interval, self.settings.backoff.delay(failures - 1, self._rng))
        if polled or self._incomplete():
            return self._interval()
        return None

    def _replanned(self, due: float | None, failures: int, polled: bool, *, longer: bool) -> float | None:
        """When the next round is due after the interval changed: one new (jittered) interval from now;
        for a shorter interval, no later than already planned."""
        fresh = self._next_delay(failures, polled)
        if fresh is None:
            return due
        fresh_due = time.monotonic() + fresh
        return fresh_due if longer or due is None else min(due, fresh_due)

    def _incomplete(self) -> bool:
        return any(self._missing(name) for name in self.specs)

    def _interval(self) -> float:
        jitter = self.settings.poll_jitter
        return self.poll_interval * self._rng.uniform(1.0 - jitter, 1.0 + jitter)

    async def _wait_for_wake(self, within: float | None) -> bool:
        """True when woken (a refresh or a re-plan was asked for), False when ``within`` seconds passed."""
        woken = True
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation (SIGTERM) that arrives as the
            # event is set (a refresh), and the loop would then not stop.
            async with asyncio.timeout(within):
                await self._wake.wait()
        except TimeoutError:
            woken = False
        self._wake.clear()
        return woken

    async def follow(self, feed: ChangeFeed, *, max_delay: float = 0.0) -> None:
        """Check the secrets a change feed names (None: all of them) as soon as it says so.

        ``max_delay``: wait a random delay in [0, max_delay] seconds first (a fleet that gets one Pub/Sub
        event at once spreads its calls). A batch whose check fails transiently (UNAVAILABLE,
        RESOURCE_EXHAUSTED, a failed write) is retried here with the backoff schedule until it succeeds;
        only then is the next batch asked for. That is the acknowledgement handshake: a feed knows a batch
        was handled when ``changes()`` is resumed (the events feed acknowledges its messages then).
        """
        changes = feed.changes()
        try:
            async for names in changes:
                if max_delay > 0:
                    await asyncio.sleep(self._rng.uniform(0.0, max_delay))
                started = time.monotonic()
                await self._handle_change(sorted(names) if names is not None else list(self.specs))
                log.debug("change handled in %.0f ms", (time.monotonic() - started) * 1000)
        finally:
            # Close it now (not whenever the garbage collector runs): a feed releases what it holds there.
            if isinstance(changes, AsyncGenerator):
                await changes.aclose()

    async def _handle_change(self, names: list[str]) -> bool:
        """``check(names)``, retried with backoff while it fails for a transient reason. A permanent failure
        (NOT_FOUND, PERMISSION_DENIED, a disabled version) is not retried: it is logged and recorded, the
        last known good value stays, and the poll loop or the next event tries again."""
        attempt = 0
        while not await self.check(names):
            retry = [name for name in names if self._failed_transiently(name)]
            if not retry and not self._write_failed:
                return False
            delay = self.settings.backoff.delay(attempt, self._rng)
            attempt += 1
            log.info(
                "change not handled yet (%s), retry %d in %.1fs",
                ", ".join(retry) if retry else "the snapshot write failed",
                attempt,
                delay,
            )
            await asyncio.sleep(delay)
            names = retry or names
        return True

    def _failed_transiently(self, name: str) -> bool:
        health = self.store.health.get(name)
        error = health.last_error if health is not None else None
        return error is not None and not isinstance(error, PermanentSourceError)


def _keep_content_tag(fetched: Fetched, served: Fetched | None) -> Fetched:
    """``fetched``, under the version it is served with when that is the same content under a content tag.

    A version that is not a number is a content tag (``.env`` values): it names bytes, not an upstream
    version, and the tags of one process need not be those of the last (they are keyed per process, so that
    logs and notifications carry no checksum of a value). The same bytes keep the tag they are served and
    recorded under (manifest, ``.notified``): a restart of ``dev`` rewrites nothing and tells the app nothing.
    """
    if (
        served is not None
        and fetched.version != served.version
        and not fetched.version.isdigit()
        and not served.version.isdigit()
        and fetched.data == served.data
    ):
        return dataclasses.replace(fetched, version=served.version)
    return fetched


def _held_back(count: int) -> str:
    return f" ({count} similar failures not logged since the last line)" if count else ""
