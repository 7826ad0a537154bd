"""The soak's verdicts: the memory trend, the invariants, and the one table (or the JSON) it prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MEMORY_MIN_WINDOW = 60.0
"""Seconds of samples (after the warm-up) below which the memory trend is reported but not judged."""
MEMORY_WARMUP_MAX = 60.0
"""At most this many seconds at the start of the memory window are left out of the fit (caches filling)."""
MEMORY_GROWTH_LIMIT = (0.05, 2048)
"""Broken when the fitted growth over the window exceeds both 5% of the mean RSS and 2 MiB."""


@dataclass(frozen=True)
class MemoryTrend:
    start_kib: int | None
    """The first sample of the first agent process (right after its bootstrap)."""
    end_kib: int | None
    """The last sample (after convergence)."""
    incarnation: int | None
    """The agent process the trend was fitted on: the one that lived through the memory window."""
    fit_from: float
    fit_to: float
    samples: int
    slope_kib_per_min: float | None
    growth_kib: float | None
    """Fitted growth over [fit_from, fit_to]."""
    mean_kib: float | None
    judged: bool
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "rss_start_kib": self.start_kib,
            "rss_end_kib": self.end_kib,
            "trend_incarnation": self.incarnation,
            "fit_window_s": [round(self.fit_from, 1), round(self.fit_to, 1)],
            "samples": self.samples,
            "slope_kib_per_min": None if self.slope_kib_per_min is None else round(self.slope_kib_per_min, 1),
            "fitted_growth_kib": None if self.growth_kib is None else round(self.growth_kib, 1),
            "mean_kib": None if self.mean_kib is None else round(self.mean_kib),
            "judged": self.judged,
            "ok": self.ok,
        }

    def describe(self) -> str:
        if self.slope_kib_per_min is None or self.growth_kib is None:
            return "no samples in the memory window"
        span = self.fit_to - self.fit_from
        text = (
            f"{self.slope_kib_per_min / 1024 * 60:+.1f} MiB/h ({self.growth_kib / 1024:+.2f} MiB over "
            f"{span:.0f} s, {self.samples} samples of agent process #{self.incarnation}, no kills)"
        )
        return text if self.judged else text + f"; not judged: window under {MEMORY_MIN_WINDOW:.0f} s"


def linear_fit(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx if sxx else 0.0


def memory_trend(samples: Sequence[tuple[float, int, int]], window: tuple[float, float]) -> MemoryTrend:
    """Fit the RSS of the agent process that lived longest inside ``window`` (seconds), after a warm-up.

    Kills reset memory, so samples of different processes cannot be fitted together; the soak stops killing
    for the memory window, so normally one process covers all of it.
    """
    start_kib = samples[0][2] if samples else None
    end_kib = samples[-1][2] if samples else None
    begin, end = window
    inside = [s for s in samples if begin <= s[0] <= end]
    spans: dict[int, list[float]] = {}
    for t, incarnation, _ in inside:
        spans.setdefault(incarnation, []).append(t)
    if not spans:
        return MemoryTrend(start_kib, end_kib, None, begin, end, 0, None, None, None, False, True)
    incarnation = max(spans, key=lambda k: max(spans[k]) - min(spans[k]))
    first = min(spans[incarnation])
    warmup = min(MEMORY_WARMUP_MAX, 0.25 * (end - first))
    points = [(t, float(kib)) for t, k, kib in inside if k == incarnation and t >= first + warmup]
    if len(points) < 3:
        return MemoryTrend(
            start_kib, end_kib, incarnation, first + warmup, end, len(points), None, None, None, False, True
        )
    slope = linear_fit(points)
    fit_from, fit_to = points[0][0], points[-1][0]
    growth = slope * (fit_to - fit_from)
    mean = sum(y for _, y in points) / len(points)
    judged = fit_to - fit_from >= MEMORY_MIN_WINDOW
    fraction, floor = MEMORY_GROWTH_LIMIT
    ok = not judged or growth <= max(fraction * mean, floor)
    return MemoryTrend(
        start_kib, end_kib, incarnation, fit_from, fit_to, len(points), slope * 60, growth, mean, judged, ok
    )


@dataclass(frozen=True)
class Invariant:
    name: str
    value: str
    expected: str
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "expected": self.expected, "ok": self.ok}


def table(rows: Sequence[tuple[str, str, str]], invariants: Sequence[Invariant]) -> str:
    """The soak's one table: figures (no verdict) and invariants (held / BROKEN)."""
    lines = ["| figure | value | must be |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {expected} |" for name, value, expected in rows]
    for inv in invariants:
        verdict = "held" if inv.ok else "**BROKEN**"
        lines.append(f"| {inv.name} | {inv.value} | {inv.expected}: {verdict} |")
    return "\n".join(lines)


def kib(value: int | float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} MiB"
