"""Pacing rotations to the fleet that fetches them, and to Secret Manager's write quota.

Every rotation adds a version, and every agent that serves the secret fetches it: one access call per pod.
With events each agent waits a random delay in ``[0, spread]`` before that call, ``spread`` being at least
``fleet.event_spread_seconds()`` = ``60 * size / access_per_minute`` (``EventsConfig.spread_seconds``), so
one rotation's fetches arrive at about ``access_per_minute`` per minute. Two rotations whose spreads overlap
would add up: ``rotate`` starts each rotation at least that ``spacing`` after the version the one before
added, so the new versions are at least ``spacing`` apart and the fleet's fetches stay within
``access_per_minute`` however many secrets are rotated (``rotate all``).

Every rotation counts, whatever came of it (one that failed does not reset the schedule; a rollback's
re-added old value is a version too). The turn is taken just before the rotation's first write (its lock),
so secrets that are skipped, not due, or only planned (``--dry-run``) never wait.

The write quota (600 requests per minute per project: AddSecretVersion, UpdateSecret...) bounds the pace too,
whatever the fleet: a rotation writes about ``WRITES_PER_ROTATION`` times (its lock at each step, the new
version, the next rotation time, a disabled version; more when it rolls back). So consecutive rotations are at
least ``MIN_GAP_SECONDS`` apart, and at most ``ROTATIONS_PER_MINUTE`` start within any minute, which keeps
one ``rotate`` within ``WRITES_PER_MINUTE``, half the quota (the rest for the other writers of the project:
Terraform, a second rotator). A gap alone could not: 10 rotations a second of 9 writes each would be 5,400
writes a minute.

Each process paces its own rotations: a CronJob's ``rotate all`` and a ``rotate --listen`` running at the same
time each take the whole budget (give each half of ``access_per_minute``, or run one).

``schedule()`` and ``Pacing.describe()`` are pure (the plan ``--dry-run`` prints); ``Pacer`` is the clock
``rotate_many`` and the listener share, and its wait ends early when ``stop`` is set (SIGTERM/SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from agent.config import FleetConfig
from agent.observe.logs import fields

log = logging.getLogger(__name__)

MIN_GAP_SECONDS: Final = 0.1
"""The least time between the starts of two rotations, whatever the fleet (the write quota)."""
WRITES_PER_ROTATION: Final = 12
"""Writes one rotation makes at most, in the count the budget uses: 9 measured for a rotation (8 updates of
the secret for its lock and next rotation time, 1 AddSecretVersion), 10 with ``--disable-previous``, about 12
when it rolls back (the old value added again, the failed version disabled)."""
WRITES_PER_MINUTE: Final = 300
"""The share of Secret Manager's write quota (600 per minute per project) one ``rotate`` uses."""
ROTATIONS_PER_MINUTE: Final = WRITES_PER_MINUTE // WRITES_PER_ROTATION
"""At most this many rotations start within any 60 seconds (25)."""
WINDOW_SECONDS: Final = 60.0
NOTABLE_SECONDS: Final = 1.0
"""Pacing is announced (a log line; with ``--dry-run`` a line of the plan) when rotations are at least this
far apart, or when the write budget makes some of them wait."""


class Stopped(Exception):
    """``stop`` was set before this rotation's turn came: it was not started."""


@dataclass(frozen=True)
class Pacing:
    """How far apart ``rotate`` starts its rotations: from the fleet that fetches the rotated secrets."""

    fleet: FleetConfig = field(default_factory=FleetConfig)

    @property
    def fetch_spread(self) -> float:
        """Seconds over which the fleet's fetches of one new version spread (the agents' event delay):
        ``60 * fleet.size / fleet.access_per_minute``."""
        return self.fleet.event_spread_seconds()

    @property
    def spacing(self) -> float:
        """Seconds between the starts of consecutive rotations: the fetch spread, at least
        ``MIN_GAP_SECONDS``."""
        return max(MIN_GAP_SECONDS, self.fetch_spread)

    def offsets(self, rotations: int) -> list[float]:
        """When each of ``rotations`` rotations may start, in seconds from the first (``schedule``)."""
        return schedule(rotations, self.spacing)

    def total_seconds(self, rotations: int) -> float:
        """How long ``rotations`` rotations take, until the fleet fetched the last one: its start plus the
        fetch spread (the rotations' own work not counted)."""
        if rotations <= 0:
            return 0.0
        return self.offsets(rotations)[-1] + max(self.fetch_spread, 0.0)

    def notable(self, rotations: int) -> bool:
        """Whether ``rotations`` rotations are visibly paced (worth saying before starting)."""
        return rotations > 1 and (self.spacing >= NOTABLE_SECONDS or rotations > ROTATIONS_PER_MINUTE)

    def describe(self, rotations: int) -> str:
        """``pacing rotations 8.3 s apart for a fleet of 10,000 pods at 72,000 access calls/min: 20
        rotations take about 2 min 47 s``."""
        pods = "pod" if self.fleet.size == 1 else "pods"
        text = (
            f"pacing rotations {duration(self.spacing)} apart for a fleet of {self.fleet.size:,} {pods} at "
            f"{self.fleet.access_per_minute:,} access calls/min"
        )
        if rotations > ROTATIONS_PER_MINUTE and self.spacing < WINDOW_SECONDS / ROTATIONS_PER_MINUTE:
            text += f", at most {ROTATIONS_PER_MINUTE} a minute (the write quota)"
        noun = "rotation takes" if rotations == 1 else "rotations take"
        return f"{text}: {rotations} {noun} about {duration(self.total_seconds(rotations))}"

    def to_json(self, rotations: int) -> dict[str, object]:
        """The plan for scripts (``--dry-run --output json``)."""
        return {
            "fleet_size": self.fleet.size,
            "access_per_minute": self.fleet.access_per_minute,
            "spacing_seconds": round(self.spacing, 3),
            "rotations": rotations,
            "total_seconds": round(self.total_seconds(rotations), 1),
        }


def announce(pacing: Pacing, rotations: int) -> None:
    """Log the pacing before ``rotations`` rotations start, when it is visible (``Pacing.notable``)."""
    if pacing.notable(rotations):
        log.info(
            "%s",
            pacing.describe(rotations),
            extra=fields(
                fleet_size=pacing.fleet.size,
                access_per_minute=pacing.fleet.access_per_minute,
                spacing_seconds=round(pacing.spacing, 3),
                rotations=rotations,
                total_seconds=round(pacing.total_seconds(rotations), 1),
            ),
        )


def schedule(rotations: int, spacing: float) -> list[float]:
    """The earliest start of each of ``rotations`` rotations, in seconds from the first: each at least
    ``spacing`` after the one before, and at most ``ROTATIONS_PER_MINUTE`` within any 60 seconds."""
    starts: list[float] = []
    for index in range(max(rotations, 0)):
        start = starts[-1] + spacing if starts else 0.0
        if index >= ROTATIONS_PER_MINUTE:
            start = max(start, starts[index - ROTATIONS_PER_MINUTE] + WINDOW_SECONDS)
        starts.append(start)
    return starts


def duration(seconds: float) -> str:
    """``0.1 s``, ``13.3 s``, ``2 min 47 s``, ``1 h 5 min``: for a person."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


class Pacer:
    """The schedule of one process's rotations: ``turn()`` before a rotation's first write, ``added()``
    after each version it adds.

    A turn comes at least the fetch spread after the last version added (what the fleet reacts to is the
    new version, so the spacing is counted from it: the work between a turn and the add varies), at least
    ``MIN_GAP_SECONDS`` after the last turn, and 60 s after the turn ``ROTATIONS_PER_MINUTE`` back, all on
    the monotonic clock. Every turn counts for the write quota, whatever came of the rotation; every
    version added counts for the access quota (a rollback adds the old value again: the next rotation
    waits from that one).
    """

    def __init__(
        self,
        pacing: Pacing,
        stop: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pacing = pacing
        self.stop = stop
        self._clock = clock
        self._turns: deque[float] = deque(maxlen=ROTATIONS_PER_MINUTE)
        self._last_added: float | None = None

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def next_turn(self) -> float:
        """The earliest time (on the clock) the next rotation may start."""
        earliest = self._clock()
        if self._last_added is not None:
            earliest = max(earliest, self._last_added + self.pacing.fetch_spread)
        if self._turns:
            earliest = max(earliest, self._turns[-1] + MIN_GAP_SECONDS)
        if len(self._turns) == ROTATIONS_PER_MINUTE:
            earliest = max(earliest, self._turns[0] + WINDOW_SECONDS)
        return earliest

    async def turn(self, secret_id: str = "") -> None:
        """Wait for the next rotation's turn, then count it. Raises Stopped, before any wait or during
        it, once ``stop`` is set: the rotation must not start."""
        if self.stopped:
            raise Stopped
        delay = self.next_turn() - self._clock()
        if delay > 0:
            log.debug("pacing: rotation of %s starts in %.1f s", secret_id or "the next secret", delay)
        # A loop: the event loop may wake a timer a hair early, and the turn must not come before its time.
        while delay > 0:
            if self.stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    raise Stopped
            delay = self.next_turn() - self._clock()
        self._turns.append(self._clock())

    def added(self) -> None:
        """A version was added (or an add was tried: it may have succeeded unseen): the next turn comes
        at least the fetch spread from now."""
        self._last_added = self._clock()
