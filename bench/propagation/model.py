"""The arithmetic of the propagation table: the interpolated percentile of the samples, and what renewal
theory predicts for polling (the wait from a rotation at a random moment to the agent's next poll).

Kept apart from the run so that the prediction printed next to the measurement is visibly independent of
it: it depends only on the poll interval and the jitter.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.propagation.world import POLL_INTERVAL, POLL_JITTER


def residual_wait_quantile(q: float, interval: float = POLL_INTERVAL, jitter: float = POLL_JITTER) -> float:
    """The ``q`` quantile of the wait from a uniformly random moment to the next poll, when intervals are
    uniform on [interval(1-j), interval(1+j)] (renewal theory: the residual life has density S(x)/E[X])."""
    low, high = interval * (1 - jitter), interval * (1 + jitter)
    mean = (low + high) / 2

    def cdf(x: float) -> float:
        if x <= low:
            return x / mean
        x = min(x, high)
        return (low + ((high - low) ** 2 - (high - x) ** 2) / (2 * (high - low))) / mean

    lo, hi = 0.0, high
    for _ in range(60):  # bisection: cdf is continuous and increasing on [0, high]
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)
