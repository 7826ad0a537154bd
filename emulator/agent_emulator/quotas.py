"""Per-project, per-minute request quotas, counted the way Secret Manager counts them.

The service has three quotas per project: *access* requests (AccessSecretVersion, 90,000/min), *read*
requests (every other non-mutating call, 600/min) and *write* requests (every mutating call, 600/min).
Which quota a method uses is ``Method.quota`` in :mod:`agent_emulator.methods`.

Windows are fixed, not sliding: a window opens at a project's first call of a kind, lasts
:data:`WINDOW_SECONDS` on the monotonic clock, and the count restarts with the first call after it ends.
Anchoring the window at the first call (rather than at wall-clock minute boundaries) makes "the 6th read
within a minute fails" deterministic in tests. The monotonic clock is used, not the emulator's movable
clock, so advancing time for rotation tests never refills a quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent_emulator.methods import QuotaKind

WINDOW_SECONDS = 60.0
"""Length of one quota window, in seconds."""

QUOTA_SERVICE = "secretmanager.googleapis.com"

# The service's names for its quota metrics and limits, as they appear in its RESOURCE_EXHAUSTED errors.
_METRIC_NAMES: dict[QuotaKind, str] = {
    "access": "Access requests",
    "read": "Read requests",
    "write": "Write requests",
}


@dataclass(frozen=True)
class QuotaLimits:
    """Requests allowed per project per minute, for each quota kind. Defaults are the service's."""

    access_per_minute: int = 90_000
    """AccessSecretVersion calls per project per minute."""
    read_per_minute: int = 600
    """Get/List calls per project per minute."""
    write_per_minute: int = 600
    """Create/Update/Delete/Add/Enable/Disable/Destroy calls per project per minute."""

    def limit(self, kind: QuotaKind) -> int:
        """The per-minute limit for one quota kind."""
        limits: dict[QuotaKind, int] = {
            "access": self.access_per_minute,
            "read": self.read_per_minute,
            "write": self.write_per_minute,
        }
        return limits[kind]

    def to_json(self) -> dict[str, int]:
        return {
            "access_per_minute": self.access_per_minute,
            "read_per_minute": self.read_per_minute,
            "write_per_minute": self.write_per_minute,
        }


SERVICE_LIMITS = QuotaLimits()
"""Secret Manager's published limits: 90,000 access, 600 read, 600 write requests per minute per project."""


def quota_exceeded_message(kind: QuotaKind, project: str) -> str:
    """The RESOURCE_EXHAUSTED message Google's front end sends when a per-minute quota is used up.

    The service names the consumer by project *number*; the emulator has only what the request named, so
    that is what it reports.
    """
    metric = _METRIC_NAMES[kind]
    return (
        f"Quota exceeded for quota metric '{metric}' and limit '{metric} per minute per project' "
        f"of service '{QUOTA_SERVICE}' for consumer 'project_number:{project}'."
    )


@dataclass(frozen=True)
class Window:
    """One fixed quota window: when it opened (monotonic seconds) and how many calls it admitted."""

    start: float
    count: int


def admit(window: Window | None, now: float, limit: int) -> tuple[bool, Window]:
    """Decide one call against a fixed window: (admitted?, the window to keep).

    A missing or expired window is replaced by a fresh one opened ``now``; so is one that opened "in the
    future" (only possible with an injected clock). A refused call leaves the count at the limit.
    """
    if window is None or now - window.start >= WINDOW_SECONDS or now < window.start:
        window = Window(start=now, count=0)
    if window.count >= limit:
        return False, window
    return True, Window(start=window.start, count=window.count + 1)


class QuotaTracker:
    """Counts calls per (project, quota kind) and refuses those past the per-minute limit."""

    def __init__(self, limits: QuotaLimits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._monotonic = monotonic
        self._windows: dict[tuple[str, QuotaKind], Window] = {}

    def admit(self, project: str, kind: QuotaKind) -> bool:
        """True if this call fits in the project's current window (and count it); False if over quota."""
        key = (project, kind)
        admitted, self._windows[key] = admit(
            self._windows.get(key), self._monotonic(), self.limits.limit(kind)
        )
        return admitted
