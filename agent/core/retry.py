"""The one retry policy: how long to wait (``Backoff``), retrying transient errors (``retry_transient``),
and which repeated failures are worth a log line (``RepeatedFailures``).

Backoff is capped exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
full jitter spreads retries of a whole fleet evenly over [0, cap], so pods that failed together do not
retry together. Schedules are data (``Backoff``) so they can come from configuration.

``retry_transient`` is the policy in force for Secret Manager calls, the agent's and the Python API's
(``agent.secrets.manager``): the Google client's own retry is switched off (``retry=None``) so that every
attempt is visible here (logs, metrics) and no hidden retry stretches a deadline. Only
``TransientSourceError`` is retried (a caller may narrow that further); anything else,
``PermanentSourceError`` included, propagates at once. The Pub/Sub subscription lifecycle
(``agent.sources.pubsub``) reconnects forever with the same ``Backoff``.

``RepeatedFailures``: during an outage every secret fails at every retry, several times a second across a
pod's secrets; one warning per attempt buries everything else in the log. It lets the first failure of
each secret (and any change of status) through at once, then at most one line per ``interval`` that says
how many it held back, and a line when the secret works again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.errors import TransientSourceError


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    """Cap of the first delay, in seconds."""
    maximum: float = 30.0
    """Largest cap, in seconds."""
    multiplier: float = 2.0
    """Growth of the cap per attempt."""

    def cap(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        # min() before the power would overflow for large attempts; cap the exponent instead.
        return min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A random delay in [0, cap(attempt)] (full jitter)."""
        return (rng or random).uniform(0.0, self.cap(attempt))


T = TypeVar("T")

OnRetry = Callable[[TransientSourceError, int, float], None]
"""``on_retry(error, attempt, delay)``: ``attempt`` (1-based) just failed with ``error``; the next one
starts after ``delay`` seconds."""


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    deadline: float | None = None,
    attempts: int | None = None,
    retryable: Callable[[TransientSourceError], bool] | None = None,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """Await ``operation()`` until it succeeds, retrying ``TransientSourceError`` with backoff.

    ``deadline`` is an absolute ``time.monotonic()`` instant (one deadline can then bound a whole batch);
    a retry whose delay would end at or after it is not attempted. ``attempts`` caps the number of calls
    (first one included). With neither, retries go on until the caller is cancelled. When time or
    attempts run out, the last transient error propagates unchanged. ``retryable(error)`` narrows which
    transient errors are retried (a write that may have happened is not repeated on UNAVAILABLE); the
    others propagate at once. ``sleep``, ``rng`` and ``monotonic`` are injectable so the schedule can be
    tested without waiting.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except TransientSourceError as error:
            if retryable is not None and not retryable(error):
                raise
            if attempts is not None and attempt >= attempts:
                raise
            delay = backoff.delay(attempt - 1, rng)
            if deadline is not None and monotonic() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(error, attempt, delay)
            await sleep(delay)


DEFAULT_INTERVAL = 60.0
"""Seconds between two warnings about the same failing secret and status."""


@dataclass
class _Streak:
    code: str
    last_logged: float
    held_back: int = 0
    failures: int = 1


class RepeatedFailures:
    """Per key (a secret's name): decide whether a failure is worth a line. One event loop, no locks."""

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._streaks: dict[str, _Streak] = {}

    def failed(self, key: str, code: str) -> int | None:
        """Record a failure. ``None``: hold this one back. Otherwise log it, and mention the returned number
        of failures held back since the last line (0 for the first of a streak or a new status)."""
        now = self._clock()
        streak = self._streaks.get(key)
        if streak is None or streak.code != code:
            self._streaks[key] = _Streak(code, now)
            return 0
        streak.failures += 1
        if now - streak.last_logged < self.interval:
            streak.held_back += 1
            return None
        held_back, streak.held_back, streak.last_logged = streak.held_back, 0, now
        return held_back

    def succeeded(self, key: str) -> int:
        """Record a success: the number of failures of the streak it ends (0 when there was none)."""
        streak = self._streaks.pop(key, None)
        return 0 if streak is None else streak.failures
