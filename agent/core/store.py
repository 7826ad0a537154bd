"""The current Snapshot and the health of every secret: the single truth that sinks, probes and the
local endpoint read.

Only the sync loop writes here, and only after the sinks have written a snapshot successfully, so what the
store serves is always what is on disk (last-known-good when the backend fails).

The set of secrets can change while the agent runs (selections): ``add_specs`` and ``remove_specs`` change
``specs`` and ``health`` IN PLACE, because readers hold on to them (the endpoint answers
``store.specs.__contains__``, bound once). The sync loop changes them in the same step as it publishes the
snapshot that adds or drops the values, so no reader sees a name without its snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from agent.config import SecretSpec
from agent.core.model import Snapshot
from agent.errors import SourceError


@dataclass
class SecretHealth:
    """What we know about one secret's freshness. Holds no value."""

    last_success: float | None = None
    """Unix time of the last successful fetch or version check."""
    last_error: SourceError | None = None
    """The most recent failure since the last success (None once a check succeeds again)."""
    consecutive_failures: int = 0


class SnapshotStore:
    def __init__(self, specs: Sequence[SecretSpec], clock: Callable[[], float] = time.time) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self._clock = clock
        self._snapshot = Snapshot()
        self._generation = 0
        self._next_change: asyncio.Future[None] | None = None
        self.health: dict[str, SecretHealth] = {name: SecretHealth() for name in self.specs}
        self.removal_listeners: list[Callable[[Collection[str]], None]] = []
        """Called with the names ``remove_specs`` took, in the same step: whoever keeps something per
        secret (the endpoint's prepared responses, which hold the value) lets it go."""

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot that is on disk now (empty before the first successful write)."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """Grows by one with every published snapshot; long-pollers wait for it to move."""
        return self._generation

    async def publish(self, snapshot: Snapshot) -> None:
        """Adopt ``snapshot`` (already written by the sinks) and wake everyone waiting for a change."""
        self._snapshot = snapshot
        self._generation += 1
        change, self._next_change = self._next_change, None
        if change is not None and not change.done():
            change.set_result(None)

    def next_change(self) -> asyncio.Future[None]:
        """A future that completes at the next ``publish``. It is shared by every waiter (waking 1,000
        long-polls is then 1,000 callbacks; an asyncio.Condition hands its lock from one waiter to the next,
        an event-loop iteration each): wait on it with ``asyncio.wait`` or ``asyncio.shield``, never cancel
        it."""
        loop = asyncio.get_running_loop()
        if self._next_change is None or self._next_change.get_loop() is not loop:
            self._next_change = loop.create_future()
        return self._next_change

    async def wait_for_generation(
        self, after: int, within: float, *, unless: asyncio.Future[None] | None = None
    ) -> int:
        """Wait until the generation exceeds ``after``, ``within`` seconds pass, or ``unless`` (say, the
        endpoint shutting down) completes; return the generation."""
        if self._generation <= after and (unless is None or not unless.done()):
            awaited = [self.next_change()] if unless is None else [self.next_change(), unless]
            # asyncio.wait never cancels what it waits on: the shared future survives a timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await asyncio.wait(awaited, return_when=asyncio.FIRST_COMPLETED)
        return self._generation

    def add_specs(self, specs: Sequence[SecretSpec]) -> None:
        """Serve ``specs`` too (no value yet: their health starts empty). Raises ValueError for a name that
        is already here, before changing anything."""
        taken = sorted(spec.name for spec in specs if spec.name in self.specs)
        if taken:
            raise ValueError(f"secrets already served: {', '.join(taken)}")
        for spec in specs:
            self.specs[spec.name] = spec
            self.health[spec.name] = SecretHealth()

    def remove_specs(self, names: Collection[str]) -> None:
        """Stop serving ``names``: their specs and health go (names not here are ignored). The snapshot
        without their values is published by the caller, in the same step."""
        for name in names:
            self.specs.pop(name, None)
            self.health.pop(name, None)
        for listener in self.removal_listeners:
            listener(names)

    # A check that was in flight when its secret was removed still reports: it has no health to update.

    def record_success(self, name: str) -> None:
        health = self.health.get(name)
        if health is None:
            return
        health.last_success = self._clock()
        health.last_error = None
        health.consecutive_failures = 0

    def record_failure(self, name: str, error: SourceError) -> None:
        health = self.health.get(name)
        if health is None:
            return
        health.last_error = error
        health.consecutive_failures += 1

    def staleness(self, name: str) -> float | None:
        """Seconds since the last successful check of ``name``; None if it never succeeded."""
        health = self.health.get(name)
        last = None if health is None else health.last_success
        return None if last is None else max(0.0, self._clock() - last)

    def not_ready_reasons(self, max_staleness: float) -> list[str]:
        """Why the agent is not ready (empty list = ready): required secrets never fetched, or stale."""
        reasons = []
        for name, spec in self.specs.items():
            if not spec.required:
                continue
            age = self.staleness(name)
            # A value adopted from disk after a restart does not count until this process has checked it.
            if age is None or self._snapshot.get(name) is None:
                reasons.append(f"{name}: not fetched yet")
            elif age > max_staleness:
                reasons.append(
                    f"{name}: last successful check {age:.0f}s ago (max_staleness {max_staleness:.0f}s)"
                )
        return reasons
