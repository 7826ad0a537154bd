"""Which failure warnings to write: the first of a run, then one a minute while it lasts.

During an outage every secret fails at every retry, several times a second across a pod's secrets; one
warning per attempt buries everything else in the log. ``RepeatedFailures`` lets the first failure of each
secret (and any change of status) through at once, then at most one line per ``interval`` that says how many
it held back, and a line when the secret works again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
