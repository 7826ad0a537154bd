"""Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").

Full jitter spreads retries of a whole fleet evenly over [0, cap], so pods that failed together do not
retry together. Schedules are data (``Backoff``) so they can come from configuration.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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
