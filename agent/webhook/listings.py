"""The webhook's shared cache of listings (ListSecrets), which resolves pods' selections at admission:
bounded in entries, in listings per minute and in how long a review waits (no I/O of its own: ``start``
makes the listing, ``agent.webhook.lister`` on Secret Manager).

A listing depends on (project, location, server filter) only (``ListingKey``); every selection with that
key, in every pod, is served from one entry, and each selection's own ``matches`` picks its ids from it
(``agent.webhook.selections``). The rules, for a review asking for a key:

* an entry younger than ``ttl`` is served as it is;
* an older one is served at once, with its real listing time, and refreshed in the background when the
  rate allows;
* no entry: the review waits for the listing at most ``timeout`` seconds, then goes on without it (the
  listing goes on and fills the entry for the next pods); a pod's keys are listed at once and waited for
  together (``resolve``), so a pod with several selections waits ``timeout`` at most too;
* one listing per key at a time (single flight): a thousand pods of one Deployment admitted at once make
  one listing;
* at most ``per_minute`` listings in any 60 seconds (a sliding window, stricter than a token bucket,
  which lets twice its size through in a minute after an idle spell), whatever the pods ask for; a key the
  window has no room for is unresolved, not queued;
* a failed listing is remembered for ``failure_hold`` seconds: pods asking meanwhile are answered with its
  reason instead of spending the rate on a listing that just failed;
* at most ``max_entries`` entries, the least recently used evicted first.

Every method is thread-safe: reviews run in worker threads, listings finish on the lister's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from agent.errors import SourceError
from agent.observe.logs import fields
from agent.sources.selection import SecretListing

log = logging.getLogger(__name__)

ListingKey = tuple[str, str | None, str]
"""(project, location or None, ListSecrets filter): what one listing depends on."""
Start = Callable[[ListingKey], "Future[tuple[SecretListing, ...]]"]
"""Starts the listing of a key somewhere else (never in the caller's thread) and returns its future."""
FAILURE_HOLD = 10.0
"""Seconds a failed listing's reason is served before the key is listed again."""
MAX_REASON = 300
"""Characters of a failure's reason in a warning (one line)."""


@dataclass(frozen=True)
class Listed:
    """The secrets one listing returned (with their labels, never a value) and when it started."""

    listings: tuple[SecretListing, ...]
    listed_at: float
    """Seconds since the epoch at the start of the listing: a secret created later may be missing."""


@dataclass(frozen=True)
class Unresolved:
    """Why there is no listing to serve: one line, no value (a listing carries none)."""

    reason: str


class Resolver(Protocol):
    """What resolves a pod's keys at admission: ``ListingCache``."""

    def resolve(self, keys: Sequence[ListingKey]) -> list[Listed | Unresolved]: ...


@dataclass
class _Entry:
    listed: Listed
    fetched: float
    """``monotonic`` time the listing ended."""


class ListingCache:
    """The shared, bounded cache of listings (module docstring)."""

    def __init__(
        self,
        start: Start,
        *,
        ttl: float = 60.0,
        per_minute: int = 30,
        timeout: float = 2.0,
        max_entries: int = 256,
        failure_hold: float = FAILURE_HOLD,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1 or max_entries < 1 or ttl <= 0 or timeout <= 0:
            raise ValueError("per_minute and max_entries must be >= 1, ttl and timeout > 0")
        self._start = start
        self.ttl, self.per_minute, self.timeout = ttl, per_minute, timeout
        self.max_entries, self.failure_hold = max_entries, failure_hold
        self._clock, self._monotonic = clock, monotonic
        self._lock = threading.RLock()  # a listing that ends at once ends under the lock
        self._entries: OrderedDict[ListingKey, _Entry] = OrderedDict()
        self._failures: OrderedDict[ListingKey, tuple[str, float]] = OrderedDict()
        self._flights: dict[ListingKey, Future[Listed]] = {}
        self._window: deque[float] = deque()
        """``monotonic`` start times of the listings of the last 60 seconds (at most ``per_minute``)."""
        self.listings = 0
        """Listings started (each at least one ListSecrets call)."""

    def lookup(self, key: ListingKey) -> Listed | Unresolved:
        """The listing of ``key`` to serve now, or why there is none (module docstring)."""
        return self.resolve([key])[0]

    def resolve(self, keys: Sequence[ListingKey]) -> list[Listed | Unresolved]:
        """``lookup`` of each of ``keys`` (a pod's selections), their listings started together and waited
        for together: at most ``timeout`` seconds in all, however many keys miss."""
        now = self._monotonic()
        found: list[Listed | Unresolved | Future[Listed]] = []
        with self._lock:
            for key in keys:
                found.append(self._served(key, now))
        deadline = now + self.timeout
        answers: list[Listed | Unresolved] = []
        for item in found:
            if not isinstance(item, Future):
                answers.append(item)
                continue
            try:
                answers.append(item.result(max(0.0, deadline - self._monotonic())))
            except TimeoutError:
                answers.append(Unresolved(f"no listing within {self.timeout:g} s (--listing-timeout)"))
            except _Failed as failed:
                answers.append(Unresolved(failed.reason))
        return answers

    def _served(self, key: ListingKey, now: float) -> Listed | Unresolved | Future[Listed]:
        """What ``key`` gets now: an entry (fresh, or stale while it is refreshed), a reason, or the
        listing to wait for (the lock is held)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            if now - entry.fetched < self.ttl:
                return entry.listed
        flight = self._flights.get(key)
        if flight is None:
            failure = self._failures.get(key)
            if failure is not None and failure[1] > now:
                if entry is None:
                    return Unresolved(failure[0])
            elif self._room(now):
                flight = self._begin(key, now)
            elif entry is None:
                return Unresolved(
                    f"the webhook's listings are at their rate ({self.per_minute} a minute, "
                    "--listings-per-minute) and it has no listing of this selection yet"
                )
        if entry is not None:
            return entry.listed  # stale: served at once, with its real time, while it is refreshed
        assert flight is not None
        if flight.done() and flight.exception() is None:
            return flight.result()
        return flight

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _room(self, now: float) -> bool:
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        return len(self._window) < self.per_minute

    def _begin(self, key: ListingKey, now: float) -> Future[Listed]:
        """Start the listing of ``key`` (the lock is held)."""
        self._window.append(now)
        self.listings += 1
        outer: Future[Listed] = Future()
        self._flights[key] = outer
        listed_at = self._clock()
        try:
            inner = self._start(key)
        except Exception as error:  # the lister is closed, or cannot start: as a failed listing
            self._finish(key, outer, None, _reason(error), locked=True)
            return outer

        def done(future: Future[tuple[SecretListing, ...]]) -> None:
            try:
                listed = Listed(tuple(future.result()), listed_at)
            except BaseException as error:  # every failure is a reason, never a traceback
                self._finish(key, outer, None, _reason(error), locked=False)
            else:
                self._finish(key, outer, listed, "", locked=False)

        inner.add_done_callback(done)
        return outer

    def _finish(
        self, key: ListingKey, outer: Future[Listed], listed: Listed | None, reason: str, *, locked: bool
    ) -> None:
        if locked:
            self._store(key, listed, reason)
        else:
            with self._lock:
                self._store(key, listed, reason)
        if listed is None:
            log.warning(
                "selection listing failed",
                extra=fields(project=key[0], location=key[1] or "", filter=key[2], reason=reason),
            )
            outer.set_exception(_Failed(reason))
        else:
            outer.set_result(listed)

    def _store(self, key: ListingKey, listed: Listed | None, reason: str) -> None:
        """Record how the listing of ``key`` ended (the lock is held)."""
        self._flights.pop(key, None)
        if listed is None:
            self._failures[key] = (reason, self._monotonic() + self.failure_hold)
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_entries:
                self._failures.popitem(last=False)
            return
        self._failures.pop(key, None)
        self._entries[key] = _Entry(listed, self._monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class _Failed(Exception):
    """A listing that ended without secrets, and why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(error: BaseException) -> str:
    """One line saying why a listing failed: the source's own message (a resource name, a status, never a
    value), or the kind of an unexpected error."""
    if isinstance(error, SourceError):
        text = " ".join(str(error).split())
    elif isinstance(error, TimeoutError):
        text = "the listing timed out"
    else:
        text = f"the listing failed ({type(error).__name__})"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


__all__ = ["Listed", "ListingCache", "ListingKey", "Resolver", "Start", "Unresolved"]
