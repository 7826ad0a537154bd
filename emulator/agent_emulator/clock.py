"""A clock the admin API can move forward, so rotation schedules can be tested without waiting."""

from __future__ import annotations

import datetime as dt


class Clock:
    """Wall-clock time plus an offset that only ever grows (``advance``)."""

    def __init__(self) -> None:
        self._offset = dt.timedelta()

    def now(self) -> dt.datetime:
        """Current emulated time, timezone-aware UTC."""
        return dt.datetime.now(dt.UTC) + self._offset

    def advance(self, seconds: float) -> dt.datetime:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time."""
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        self._offset += dt.timedelta(seconds=seconds)
        return self.now()

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()
