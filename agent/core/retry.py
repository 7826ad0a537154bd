"""Retrying transient source errors: capped exponential backoff with full jitter, bounded by a deadline.

This is the one retry policy in force for Secret Manager calls: the Google client's own retry is switched
off (``retry=None``) so that every attempt is visible here (logs, metrics) and no hidden retry stretches a
deadline. Only ``TransientSourceError`` is retried; anything else, ``PermanentSourceError`` included,
propagates at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agent.core.backoff import Backoff
from agent.errors import TransientSourceError

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
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """Await ``operation()`` until it succeeds, retrying ``TransientSourceError`` with backoff.

    ``deadline`` is an absolute ``time.monotonic()`` instant (one deadline can then bound a whole batch);
    a retry whose delay would end at or after it is not attempted. ``attempts`` caps the number of calls
    (first one included). With neither, retries go on until the caller is cancelled. When time or
    attempts run out, the last transient error propagates unchanged. ``sleep``, ``rng`` and ``monotonic``
    are injectable so the schedule can be tested without waiting.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except TransientSourceError as error:
            if attempts is not None and attempt >= attempts:
                raise
            delay = backoff.delay(attempt - 1, rng)
            if deadline is not None and monotonic() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(error, attempt, delay)
            await sleep(delay)
