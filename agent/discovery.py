"""Discovery: the secrets each selection (``select``) matches, followed as they come and go, paced to the
fleet's share of the READ quota.

ListSecrets counts against the read quota, 600 requests per minute per project, shared by every pod of
the fleet: 10,000 pods listing at start would take 17 minutes of it. So an agent lists only when it must:

* at start, a selection's candidates come from what the webhook resolved at admission (``select[].known``,
  ``known_at``) or from the record a previous agent (``init``, or ``run`` before a restart) left in
  ``<output_dir>/.selection`` (the ids each selection matched and when it was listed; never a value);
  the fresher of the two wins, and with either there is no listing at start. Otherwise the agent lists
  after a random delay in [0, ``discovery.start_jitter``], retrying RESOURCE_EXHAUSTED and UNAVAILABLE
  with the capped backoff of ``agent.core.retry`` (one log line per burst of failures, not per attempt);
  the explicit ``secrets`` bootstrap meanwhile and never wait on a listing;
* then Pub/Sub events (``SECRET_CREATE`` / ``SECRET_UPDATE`` / ``SECRET_DELETE``, with the secret's labels)
  add and remove secrets as they happen, and a safety re-list every ``discovery.relist_seconds`` (jittered
  by +/-10%, the first one counted from the last listing, so a restart does not re-list early) catches what
  events missed, or is how new secrets are found without events.

What a selection takes is decided by the pure ``agent.sources.selection``: ``resolve`` against the explicit
secrets, the templates and each other; a collision is logged once as an error naming both sides (the loser
is skipped, ``secrets_agent_selection_collisions_total``). Secrets newly taken go to the Syncer in one
``add_specs`` (one swap, one notification). A secret that stops matching (a listing without it, a
relabelling, a deletion) leaves after ``discovery.grace_period``, unless it matches again meanwhile, with a
log line naming the selection and the secret; a failed listing or fetch never removes anything
(last-known-good wins over failures).

``.selection`` is written atomically, never through a link (``agent.core.atomicfile``), and read back only
as a regular file of bounded size; a record whose selection changed (other labels, prefix, pattern,
project or location) is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.config import (
    SELECTION_FILE_NAME,
    DiscoveryConfig,
    FleetConfig,
    SecretSpec,
    SelectSpec,
    TemplateSpec,
)
from agent.core.atomicfile import read_regular_file, write_atomically
from agent.core.retry import Backoff, RepeatedFailures, retry_transient
from agent.core.words import plural
from agent.errors import AgentError, SourceError, TransientSourceError
from agent.sources.events import FETCH_EVENTS, SecretEvent
from agent.sources.listing import Lister, ProjectNames, matched
from agent.sources.selection import Resolution, SecretListing, matches, resolve

if TYPE_CHECKING:  # prometheus_client is for run only
    from agent.observe.metrics import Metrics

log = logging.getLogger(__name__)

Key = tuple[str, str | None, str]
"""A secret: (project as configured, location or None, id)."""

STATE_FORMAT = 1
MAX_STATE_BYTES = 8 * 1024 * 1024
"""Largest ``.selection`` read back: ids only, a few dozen bytes each."""
RELIST_JITTER = 0.1
"""Each re-list interval is multiplied by a random factor in [0.9, 1.1]."""
MAX_QUEUED = 10_000
"""Events waiting to be applied; past it an event is dropped (the safety re-list catches up)."""


class SpecTarget(Protocol):
    """What discovery hands its secrets to: ``agent.sync.Syncer``."""

    async def add_specs(
        self,
        specs: list[SecretSpec],
        deadline: float | None = None,
        *,
        origins: Mapping[str, str] | None = None,
    ) -> object: ...

    async def remove_specs(self, names: list[str], *, reason: str) -> object: ...

    async def check(self, names: Collection[str] | None = None) -> bool: ...


@dataclass(frozen=True)
class DiscoverySettings:
    """How discovery paces itself (from ``Config.discovery``, ``fleet``, ``events``, ``gcp``)."""

    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    events: bool = False
    """Whether events are configured: the re-list is a safety net then (its floor is 1 hour)."""
    backoff: Backoff = field(default_factory=Backoff)
    """Retries of a listing that failed transiently (RESOURCE_EXHAUSTED, UNAVAILABLE)."""
    fetch_timeout: float = 60.0
    """Seconds the first fetch of a newly selected secret may retry (its failure is recorded and retried
    by the sync loop, as any other)."""
    event_spread: float = 0.0
    """Random delay in [0, event_spread] seconds before fetching what an event brought (the fleet gets the
    same event at once: ``events.spread_seconds``)."""


# --------------------------------------------------------------------------------------------------
# The record in <output_dir>/.selection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionRecord:
    """What one selection matched at its last listing (or since, by events)."""

    fingerprint: str
    """``fingerprint(select)`` of the selection the record was made for: a changed selection's record is
    not used."""
    listed_at: float | None
    """Unix time of the last successful listing, None when none was made (known ids only)."""
    matched: tuple[str, ...]
    """Ids of the secrets it matched, sorted."""


def fingerprint(select: SelectSpec) -> str:
    """A digest of what decides which secrets ``select`` matches (project, location, labels, prefix,
    pattern): not of how they are delivered, which the record does not hold."""
    criteria = [select.project, select.location, [list(pair) for pair in select.labels]]
    criteria += [select.name_prefix, select.name_regex]
    return hashlib.sha256(json.dumps(criteria).encode()).hexdigest()[:32]


def read_state(directory: Path) -> dict[str, SelectionRecord]:
    """The records in ``directory/.selection`` by selection name; empty when there is none, or it is not
    a regular file of ours (a link is not followed), too large, or not what we write."""
    try:
        document = json.loads(read_regular_file(directory / SELECTION_FILE_NAME, MAX_STATE_BYTES))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as error:
        log.warning("not using %s: %s", directory / SELECTION_FILE_NAME, _why(error))
        return {}
    selections = document.get("selections") if isinstance(document, dict) else None
    if not isinstance(selections, dict) or document.get("format") != STATE_FORMAT:
        log.warning("not using %s: not a record this agent writes", directory / SELECTION_FILE_NAME)
        return {}
    records: dict[str, SelectionRecord] = {}
    for name, entry in selections.items():
        if not isinstance(entry, dict):
            continue
        ids, digest, listed_at = entry.get("matched"), entry.get("fingerprint"), entry.get("listed_at")
        if (
            not isinstance(ids, list)
            or not all(isinstance(i, str) for i in ids)
            or not isinstance(digest, str)
        ):
            continue
        if listed_at is not None and (not isinstance(listed_at, int | float) or isinstance(listed_at, bool)):
            continue
        records[str(name)] = SelectionRecord(
            digest, None if listed_at is None else float(listed_at), tuple(ids)
        )
    return records


def write_state(directory: Path, records: Mapping[str, SelectionRecord]) -> None:
    """Record ``records`` in ``directory/.selection`` (atomically, mode 0600, a link there replaced, not
    followed). A failure is logged, never raised: without the record the next start lists instead."""
    path = directory / SELECTION_FILE_NAME
    document = {
        "format": STATE_FORMAT,
        "selections": {
            name: {"fingerprint": r.fingerprint, "listed_at": r.listed_at, "matched": list(r.matched)}
            for name, r in sorted(records.items())
        },
    }
    try:
        write_atomically(path, json.dumps(document, separators=(",", ":")).encode(), mode=0o600)
    except OSError as error:
        log.warning("cannot record what the selections matched in %s: %s", path, _why(error))


def _why(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return "not JSON" if isinstance(error, ValueError) else type(error).__name__


# --------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listed:
    """A successful listing of ``selection``, started at ``started`` (monotonic) and made at ``at``."""

    selection: str
    listings: list[SecretListing]
    started: float
    at: float


@dataclass(frozen=True)
class _Event:
    event: SecretEvent
    listing: SecretListing
    at: float
    """monotonic() when it arrived."""


@dataclass(frozen=True)
class _Expired:
    selection: str
    key: Key


_Work = _Listed | _Event | _Expired


@dataclass
class ListingFailures:
    """The selections whose listing failed (by name), with the last error of each."""

    errors: dict[str, SourceError] = field(default_factory=dict)


class Discovery:
    """The selections' secrets, from known ids, the record, listings and events (module docstring).

    ``explicit``: the configured ``secrets`` (they win every collision); ``templates`` and
    ``reserved_files`` (path in ``output_dir`` -> who writes it: the env file) are claims too. ``lister``
    lists a selection (``agent.sources.listing.SelectionLister``); ``state_dir``: where ``.selection``
    lives (None: nowhere, ``exec``); ``names``: the service's project numbers (events name projects so);
    ``served(name)``: the version served now (None: nothing yet). Use it in one event loop.
    """

    def __init__(
        self,
        selections: Sequence[SelectSpec],
        explicit: Sequence[SecretSpec],
        lister: Lister,
        settings: DiscoverySettings | None = None,
        *,
        templates: Sequence[TemplateSpec] = (),
        reserved_files: Mapping[str, str] | None = None,
        state_dir: Path | None = None,
        names: ProjectNames | None = None,
        served: Callable[[str], str | None] | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.selections = {select.name: select for select in selections}
        self.explicit = list(explicit)
        self.lister = lister
        self.settings = settings if settings is not None else DiscoverySettings()
        self.templates = list(templates)
        self.reserved_files = dict(reserved_files or {})
        self.state_dir = state_dir
        self.names = names if names is not None else ProjectNames()
        self.served = served
        self.metrics = metrics
        self.on_specs: Callable[[list[SecretSpec]], None] | None = None
        """Told every spec the agent delivers (explicit first) whenever the selected ones change (the
        events feed follows them)."""
        self.events_flowing = self.settings.events
        """Whether events flow now; the re-list interval follows it (``set_events_flowing``)."""
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._monotonic = monotonic
        self._matched: dict[str, dict[Key, SecretListing]] = {name: {} for name in self.selections}
        """Per selection, the secrets it matches (those leaving in their grace period included)."""
        self._since: dict[tuple[str, Key], float] = {}
        """monotonic() of the last event about a secret, per selection: an older listing says nothing."""
        self._leaving: dict[tuple[str, Key], asyncio.TimerHandle | None] = {}
        self._why_leaving: dict[tuple[str, Key], str] = {}
        self._listed_at: dict[str, float | None] = {name: None for name in self.selections}
        self._listed_once: set[str] = set()
        self._started_with: set[str] = set()
        """Selections whose candidates came from known ids or the record (no listing at start)."""
        self._delivered: dict[str, SecretSpec] = {}
        """Local name -> the selected spec the Syncer has."""
        self._owner: dict[str, str] = {}
        """Local name -> its selection."""
        self._reported: set[str] = set()
        self._collisions: list[str] = []
        self._failures = RepeatedFailures()
        self._attempts: dict[str, int] = {}
        self._queue: asyncio.Queue[_Work] | None = None
        self._pending: list[_Work] = []  # work that came before run() made the queue
        self._dropped = 0
        self._wake: asyncio.Event | None = None
        self._saved: dict[str, SelectionRecord] | None = None

    # -- start -------------------------------------------------------------------------------------

    def start(self) -> list[SecretSpec]:
        """Take the candidates that need no listing (known ids, the ``.selection`` record, whichever is
        fresher) and return the specs they resolve to, for the bootstrap. Collisions are logged."""
        records = read_state(self.state_dir) if self.state_dir is not None else {}
        for name, select in self.selections.items():
            if select.project is None:
                continue
            known = select.known if (select.known or select.known_at is not None) else None
            record = records.get(name)
            if record is not None and record.fingerprint != fingerprint(select):
                log.info(
                    "select %r changed since %s was written: not using the record", name, SELECTION_FILE_NAME
                )
                record = None
            ids: tuple[str, ...] | None = None
            when: float | None = None
            if record is not None and (known is None or (record.listed_at or 0.0) > (select.known_at or 0.0)):
                ids, when, origin = record.matched, record.listed_at, SELECTION_FILE_NAME
            elif known is not None:
                ids, when, origin = known, select.known_at, "its known ids"
            if ids is None:
                continue
            self._started_with.add(name)
            self._listed_at[name] = when
            for secret_id in ids:
                listing = SecretListing(select.project, select.location, secret_id, None)
                self._matched[name][listing.key] = listing
            log.info(
                "select %r: starting from %s (%s), without listing", name, origin, plural(len(ids), "secret")
            )
        resolution = self._resolve()
        self._report(resolution)
        self._delivered = {spec.name: spec for spec in resolution.all_specs()}
        self._owner = {spec.name: name for name, specs in resolution.specs.items() for spec in specs}
        self._count(resolution)
        return list(self._delivered.values())

    @property
    def to_list(self) -> list[str]:
        """The selections that must be listed before their secrets are known (no known ids, no record)."""
        return [name for name in self.selections if name not in self._started_with]

    @property
    def collisions(self) -> list[str]:
        """Every collision message logged so far (``init`` fails on one)."""
        return list(self._collisions)

    def delivered(self) -> dict[str, list[SecretSpec]]:
        """The specs each selection delivers now (as the Syncer has them), by selection."""
        found: dict[str, list[SecretSpec]] = {name: [] for name in self.selections}
        for name, spec in self._delivered.items():
            found[self._owner[name]].append(spec)
        return found

    def origins(self) -> dict[str, str]:
        """Local name -> the selection that delivers it, for every selected secret the Syncer has (what
        templates with ``select`` see)."""
        return dict(self._owner)

    def resolution(self) -> Resolution:
        """What the selections take from what is known now (collisions logged once)."""
        resolution = self._resolve()
        self._report(resolution)
        return resolution

    async def list_now(
        self, names: Collection[str] | None = None, *, deadline: float | None = None
    ) -> ListingFailures:
        """List ``names`` (default: those that must be, ``to_list``) at once, concurrently, retrying
        transient failures until ``deadline`` (monotonic), and take what they match; for ``init``,
        ``exec`` and ``check-config``. Returns the selections that could not be listed."""
        chosen = list(self.to_list if names is None else names)
        results = await asyncio.gather(*(self._list_retrying(name, deadline) for name in chosen))
        failures = ListingFailures()
        for name, result in zip(chosen, results, strict=True):
            if isinstance(result, SourceError):
                failures.errors[name] = result
            else:
                self._apply_listing(result)
        return failures

    def accept(self, resolution: Resolution) -> list[SecretSpec]:
        """Record that the Syncer now has every spec of ``resolution`` (``init`` added them itself);
        returns those it did not have before."""
        new = [spec for spec in resolution.all_specs() if self._delivered.get(spec.name) != spec]
        self._delivered = {spec.name: spec for spec in resolution.all_specs()}
        self._owner = {spec.name: name for name, specs in resolution.specs.items() for spec in specs}
        self._count(resolution)
        return new

    def save(self) -> None:
        """Write ``.selection`` (when there is a place for it and it changed)."""
        if self.state_dir is None:
            return
        records = {
            name: SelectionRecord(
                fingerprint(select),
                self._listed_at[name],
                tuple(sorted(key[2] for key in self._matched[name])),
            )
            for name, select in self.selections.items()
            if name in self._started_with or self._listed_at[name] is not None or self._matched[name]
        }
        if records != self._saved:
            write_state(self.state_dir, records)
            self._saved = records

    # -- run ---------------------------------------------------------------------------------------

    async def run(self, syncer: SpecTarget, ready: asyncio.Event | None = None) -> None:
        """Follow the selections until cancelled: list when due, apply events and listings, hand new
        secrets to ``syncer`` and take away those that left (after their grace period). Nothing is
        applied before ``ready`` is set (the bootstrap is done); listings may run meanwhile."""
        self._queue = asyncio.Queue(MAX_QUEUED)
        self._wake = asyncio.Event()
        for work in self._pending:
            self._enqueue(work)
        self._pending = []
        if self.metrics is not None:
            self.metrics.known_selections(self.selections)
            self._count(self._resolve())
            for name, when in self._listed_at.items():
                if when is not None:
                    self.metrics.selection_listed(name, when)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listing_loop(), name="discovery-listing")
                group.create_task(self._apply_loop(syncer, ready), name="discovery-apply")
        finally:
            for handle in self._leaving.values():
                if handle is not None:
                    handle.cancel()

    def on_secret(self, event: SecretEvent, listing: SecretListing | None) -> None:
        """A Secret Manager event about a secret (``agent.sources.event_feed``): applied in order."""
        if listing is None:
            log.debug("select: %s for %s without a readable secret, ignored", event.event_type, event.secret)
            return
        self._enqueue(_Event(event, self.names.ours(listing), self._monotonic()))

    def set_events_flowing(self, flowing: bool) -> None:
        """Events flow (True) or not: the re-list interval is planned again (shorter while they do not)."""
        if flowing != self.events_flowing:
            self.events_flowing = flowing
            if self._wake is not None:
                self._wake.set()

    def relist_interval(self) -> float:
        """Seconds between safety listings now, before jitter."""
        events = self.settings.events and self.events_flowing
        return self.settings.discovery.relist_seconds(
            self.settings.fleet, events, listings=max(1, len(self.selections))
        )

    def _enqueue(self, work: _Work) -> None:
        if self._queue is None:
            self._pending.append(work)
            return
        try:
            self._queue.put_nowait(work)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("select: too many events queued; dropping some (the next listing catches up)")

    # -- listing -----------------------------------------------------------------------------------

    async def _listing_loop(self) -> None:
        due = {name: self._first_due(name) for name in self.selections}
        assert self._wake is not None
        while due:
            name = min(due, key=due.__getitem__)
            wait = due[name] - self._monotonic()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                if self._wake.is_set():
                    # Events stopped or resumed: plan the re-lists after the last listing again.
                    due = {n: self._replanned(n, due[n]) for n in due}
                    continue
            started, at = self._monotonic(), self._clock()
            try:
                listings = await self.lister(self.selections[name])
            except SourceError as error:
                due[name] = self._monotonic() + self._after_failure(name, error)
                continue
            self._listed_ok(name)
            self._enqueue(_Listed(name, listings, started, at))
            due[name] = self._monotonic() + self._jittered(self.relist_interval())

    def _first_due(self, name: str) -> float:
        """When selection ``name`` is first listed (monotonic): soon (with the start jitter) when it has
        no candidates; else at a random moment of the next re-list interval (``_spread_relist``)."""
        now = self._monotonic()
        if name not in self._started_with:
            return now + self._rng.uniform(0.0, self._start_jitter())
        last = self._listed_at[name]
        if last is None:
            return now + self._jittered(self.relist_interval())
        return self._spread_relist(last)

    def _spread_relist(self, last: float) -> float:
        """The first re-list of a selection this process has not listed yet, whose ids came from a listing
        made at ``last`` (known ids, or the record): at a random moment of one whole interval from now, or,
        when one interval since ``last`` has passed already, within the start jitter.

        Not one interval after ``last``: the pods of a fleet started from one listing (the webhook resolves
        a selection once for all of them), and would all re-list together: 10,000 reads within minutes. Spread
        over a whole interval the fleet re-lists at its share of the read quota; a pod's ids are then at most
        two intervals old (events bring the news, the re-list is the safety net)."""
        now = self._monotonic()
        interval = self.relist_interval()
        if last + interval <= self._clock():
            return now + self._rng.uniform(0.0, self._start_jitter())
        return now + self._rng.uniform(0.0, interval)

    def _replanned(self, name: str, due: float) -> float:
        last = self._listed_at[name]
        if last is None or self._attempts.get(name):
            return due  # not listed yet, or retrying: keep that schedule
        if name not in self._listed_once:
            return self._spread_relist(last)  # the interval changed before the first re-list: spread again
        remaining = last + self._jittered(self.relist_interval()) - self._clock()
        if remaining > 0:
            return self._monotonic() + remaining
        # Overdue now (events stopped for the whole fleet at once): spread as a start is, not all at once.
        return self._monotonic() + self._rng.uniform(0.0, self._start_jitter())

    def _start_jitter(self) -> float:
        return self.settings.discovery.start_jitter_seconds(
            self.settings.fleet, listings=max(1, len(self.selections))
        )

    def _jittered(self, interval: float) -> float:
        return interval * self._rng.uniform(1.0 - RELIST_JITTER, 1.0 + RELIST_JITTER)

    def _after_failure(self, name: str, error: SourceError) -> float:
        """Count and (once per burst) log a failed listing; seconds until the next attempt."""
        attempt = self._attempts.get(name, 0)
        self._attempts[name] = attempt + 1
        if self.metrics is not None:
            self.metrics.selection_listing_failed(name, error.code)
        transient = isinstance(error, TransientSourceError)
        delay = (
            self.settings.backoff.delay(attempt, self._rng)
            if transient
            else self._jittered(min(self.relist_interval(), 600.0))
        )
        held_back = self._failures.failed(name, error.code)
        if held_back is not None:
            log.warning(
                "select %r: listing failed (%s, %s): %s%s; %s; next attempt in %.1fs%s",
                name,
                "transient" if transient else "permanent",
                error.code,
                error.message,
                f" (hint: {error.hint})" if error.hint else "",
                "keeping what it matched" if self._matched[name] else "its secrets are not known yet",
                delay,
                f" ({held_back} similar failures not logged since the last line)" if held_back else "",
            )
        return delay

    def _listed_ok(self, name: str) -> None:
        self._attempts.pop(name, None)
        failures = self._failures.succeeded(name)
        if failures:
            log.info("select %r: listing works again after %s", name, plural(failures, "failed attempt"))

    async def _list_retrying(self, name: str, deadline: float | None) -> _Listed | SourceError:
        def retrying(error: TransientSourceError, attempt: int, delay: float) -> None:
            if self.metrics is not None:
                self.metrics.selection_listing_failed(name, error.code)
            held_back = self._failures.failed(name, error.code)
            if held_back is not None:
                log.warning(
                    "select %r: listing failed (%s): %s; retry %d in %.1fs%s",
                    name,
                    error.code,
                    error.message,
                    attempt + 1,
                    delay,
                    f" ({held_back} similar failures not logged since the last line)" if held_back else "",
                )

        select = self.selections[name]
        started, at = self._monotonic(), self._clock()
        try:
            if deadline is None:
                listings = await retry_transient(
                    lambda: self.lister(select), backoff=self.settings.backoff, attempts=1
                )
            else:
                loop = asyncio.get_running_loop()
                async with asyncio.timeout_at(loop.time() + max(0.0, deadline - self._monotonic())):
                    listings = await retry_transient(
                        lambda: self.lister(select),
                        backoff=self.settings.backoff,
                        deadline=deadline,
                        on_retry=retrying,
                    )
        except SourceError as error:
            if self.metrics is not None:
                self.metrics.selection_listing_failed(name, error.code)
            return error
        except TimeoutError:
            return TransientSourceError(
                f"select {name!r}: DEADLINE_EXCEEDED: no listing before the deadline",
                code="DEADLINE_EXCEEDED",
                ref=f"projects/{select.project}",
                hint="raise the timeout setting if this persists",
            )
        self._listed_ok(name)
        return _Listed(name, listings, started, at)

    # -- applying ------------------------------------------------------------------------------------

    async def _apply_loop(self, syncer: SpecTarget, ready: asyncio.Event | None) -> None:
        assert self._queue is not None
        if ready is not None:
            await ready.wait()
        while True:
            batch = [await self._queue.get()]
            if any(isinstance(work, _Event) for work in batch) and self.settings.event_spread > 0:
                await asyncio.sleep(self._rng.uniform(0.0, self.settings.event_spread))
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            check: set[str] = set()
            for work in batch:
                if isinstance(work, _Listed):
                    self._apply_listing(work)
                elif isinstance(work, _Event):
                    check |= self._apply_event(work)
                else:
                    self._apply_expiry(work)
            await self._reconcile(syncer)
            names = sorted(name for name in check if name in self._delivered)
            if names:
                # A version event that came before the feed followed the secret: it has nothing served.
                await syncer.check(names)

    def _apply_listing(self, listed: _Listed) -> None:
        name = listed.selection
        select = self.selections[name]
        found = {listing.key: listing for listing in matched(select, listed.listings)}
        for key, listing in found.items():
            if self._since.get((name, key), float("-inf")) <= listed.started:
                self._match(name, listing, "it is listed")
        for key in list(self._matched[name]):
            if key not in found and self._since.get((name, key), float("-inf")) <= listed.started:
                self._stop(name, key, "the last listing did not return it")
        first = name not in self._listed_once
        self._listed_once.add(name)
        self._listed_at[name] = listed.at
        self._started_with.add(name)
        if self.metrics is not None:
            self.metrics.selection_listed(name, listed.at)
        # The first listing of this process is news; a safety re-list that found what was known is not.
        log.log(
            logging.INFO if first else logging.DEBUG,
            "select %r: listed, %s",
            name,
            plural(len(found), "matching secret"),
        )

    def _apply_event(self, work: _Event) -> set[str]:
        """Apply one event; returns the local names a version event asks to check (those the feed did not
        follow yet, with nothing as new served)."""
        event, listing, key = work.event, work.listing, work.listing.key
        kind = event.event_type
        if kind in FETCH_EVENTS:
            names = {local for local, spec in self._delivered.items() if _key(spec) == key}
            if self.served is not None and event.version is not None:
                served = self.served
                names = {local for local in names if not _served_at_least(served(local), event.version)}
            return names
        for name, select in self.selections.items():
            if kind == "SECRET_DELETE":
                if key in self._matched[name]:
                    self._since[(name, key)] = work.at
                    self._stop(name, key, "it was deleted")
            elif kind in ("SECRET_CREATE", "SECRET_UPDATE") and listing.labels is not None:
                if matches(dataclasses.replace(select, known=()), listing):
                    self._since[(name, key)] = work.at
                    why = "it was created" if kind == "SECRET_CREATE" else "its labels match"
                    self._match(name, listing, why)
                elif key in self._matched[name]:
                    self._since[(name, key)] = work.at
                    self._stop(name, key, "its labels no longer match")
        return set()

    def _match(self, name: str, listing: SecretListing, why: str) -> None:
        key = listing.key
        known = key in self._matched[name]
        self._matched[name][key] = listing
        if (name, key) in self._leaving:
            handle = self._leaving.pop((name, key))
            self._why_leaving.pop((name, key), None)
            if handle is not None:
                handle.cancel()
            log.info("select %r matches secret %r again (%s): it stays", name, key[2], why)
        elif not known:
            log.info("select %r matches secret %r (%s)", name, key[2], why)

    def _stop(self, name: str, key: Key, why: str) -> None:
        """Secret ``key`` no longer matches selection ``name``: it leaves after the grace period."""
        if key not in self._matched[name] or (name, key) in self._leaving:
            return
        grace = self.settings.discovery.grace_period
        self._why_leaving[(name, key)] = why
        if grace <= 0:
            self._leaving[(name, key)] = None
            self._apply_expiry(_Expired(name, key))
            return
        log.info(
            "select %r no longer matches secret %r (%s): it leaves in %gs unless it matches again",
            name,
            key[2],
            why,
            grace,
        )
        loop = asyncio.get_running_loop()
        self._leaving[(name, key)] = loop.call_later(grace, self._enqueue, _Expired(name, key))

    def _apply_expiry(self, expired: _Expired) -> None:
        slot = (expired.selection, expired.key)
        if slot not in self._leaving:
            return  # it matched again meanwhile
        del self._leaving[slot]
        why = self._why_leaving.pop(slot, "it no longer matches")
        self._matched[expired.selection].pop(expired.key, None)
        log.info("select %r: secret %r leaves the selection (%s)", expired.selection, expired.key[2], why)

    async def _reconcile(self, syncer: SpecTarget) -> None:
        """Hand the Syncer what the selections take now: removals first (one swap per selection), then
        every new secret in one ``add_specs`` (one swap, one notification)."""
        resolution = self._resolve()
        self._report(resolution)
        wanted = {spec.name: spec for spec in resolution.all_specs()}
        owners = {spec.name: name for name, specs in resolution.specs.items() for spec in specs}
        gone: dict[str, list[str]] = {}
        for local, spec in self._delivered.items():
            if wanted.get(local) != spec:
                gone.setdefault(self._owner[local], []).append(local)
        changed = False
        for selection, locals_ in gone.items():
            try:
                await syncer.remove_specs(sorted(locals_), reason=f"no longer selected by {selection!r}")
            except (AgentError, ValueError) as error:
                log.error("select %r: could not remove %s: %s", selection, ", ".join(sorted(locals_)), error)
                continue
            for local in locals_:
                del self._delivered[local]
                del self._owner[local]
            changed = True
        new = [spec for local, spec in wanted.items() if local not in self._delivered]
        if new:
            try:
                await syncer.add_specs(
                    new,
                    deadline=self._monotonic() + self.settings.fetch_timeout,
                    origins={spec.name: owners[spec.name] for spec in new},
                )
            except (AgentError, ValueError) as error:
                log.error("select: could not add %s: %s", ", ".join(s.name for s in new), error)
            else:
                for spec in new:
                    self._delivered[spec.name] = spec
                    self._owner[spec.name] = owners[spec.name]
                changed = True
        if changed and self.on_specs is not None:
            self.on_specs([*self.explicit, *self._delivered.values()])
        self._count(resolution)
        self.save()

    # -- resolution ------------------------------------------------------------------------------------

    def _resolve(self) -> Resolution:
        # Membership decides: each selection takes what it matched (labels were checked when it was seen),
        # so every candidate goes to resolve() without labels, named in the selection's own known ids.
        augmented = [
            dataclasses.replace(select, known=tuple(sorted(key[2] for key in self._matched[name])))
            for name, select in self.selections.items()
        ]
        candidates = {key for found in self._matched.values() for key in found}
        listings = [SecretListing(key[0], key[1], key[2], None) for key in candidates]
        return resolve(
            augmented,
            self.explicit,
            listings,
            templates=self.templates,
            reserved_files=self.reserved_files,
        )

    def _report(self, resolution: Resolution) -> None:
        for collision in resolution.collisions:
            if collision.message not in self._reported:
                self._reported.add(collision.message)
                self._collisions.append(collision.message)
                log.error("%s: skipped", collision.message)
                if self.metrics is not None:
                    self.metrics.selection_collision(collision.selection)
        for skipped in resolution.skipped:
            if skipped.message not in self._reported:
                self._reported.add(skipped.message)
                log.warning("%s", skipped.message)

    def _count(self, resolution: Resolution) -> None:
        if self.metrics is None:
            return
        for name, specs in resolution.specs.items():
            self.metrics.selection(name, len(specs))


def _key(spec: SecretSpec) -> Key:
    return spec.ref.project, spec.ref.location or None, spec.ref.secret


def _served_at_least(served: str | None, version: str) -> bool:
    return served is not None and served.isdigit() and version.isdigit() and int(served) >= int(version)


def reserved_files(env_inside: str | None) -> dict[str, str]:
    """The claims of files the agent writes itself in ``output_dir`` besides the secrets (the env file
    when it shares the swap), for ``resolve``."""
    return {env_inside: "the env file"} if env_inside else {}


__all__ = [
    "Discovery",
    "DiscoverySettings",
    "ListingFailures",
    "SelectionRecord",
    "SpecTarget",
    "fingerprint",
    "read_state",
    "reserved_files",
    "write_state",
]
