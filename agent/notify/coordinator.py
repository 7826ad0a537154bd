"""Turning bursts of snapshot swaps into one notification per notifier, retried until delivered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from agent.core.retry import Backoff
from agent.core.words import plural
from agent.errors import AgentError
from agent.notify.base import Notifier

log = logging.getLogger(__name__)


ResultHook = Callable[[str, bool], None]
"""``on_result(notifier_name, ok)``: called after every attempt of every notifier (for metrics)."""


class ReloadCoordinator:
    """Turns bursts of snapshot swaps into one notification per notifier, retried until delivered.

    ``request(versions)`` is called (in the event loop's thread) after each successful swap. ``run()``
    waits until ``debounce`` seconds pass without a new request (capped at ``max_delay`` after the first
    one, so a steady stream of swaps cannot starve the app), then runs every notifier concurrently with the
    latest versions. A failing notifier is retried on its own with ``backoff`` up to ``max_attempts``
    attempts; a new request arriving meanwhile supersedes the retries, since the next round notifies
    everyone with newer versions anyway.
    """

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        debounce: float,
        backoff: Backoff,
        max_attempts: int,
        max_delay: float | None = None,
        on_result: ResultHook | None = None,
        on_delivered: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.notifiers = tuple(notifiers)
        self.debounce = debounce
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.max_delay = max_delay if max_delay is not None else max(10 * debounce, 1.0)
        self.on_result = on_result
        self.on_delivered = on_delivered
        """Called with the versions once every notifier delivered them."""
        self._latest: dict[str, str] = {}
        self._requested = 0
        self._handled = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def request(self, versions: Mapping[str, str]) -> None:
        """Ask for a notification with these versions; returns at once. Call it from the event loop."""
        self._latest = dict(versions)
        self._requested += 1
        self._idle.clear()
        self._wakeup.set()

    async def idle(self) -> None:
        """Return once every request made so far was delivered or given up (needs ``run()`` running)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Deliver requests until cancelled; never raises anything else."""
        while True:
            await self._wakeup.wait()
            await self._quiet_period()
            versions, generation = self._latest, self._requested
            try:
                await self._deliver(versions)
            except Exception:  # a bug in a notifier must not stop future notifications
                log.exception("notifying the app failed unexpectedly")
            self._handled = generation
            if self._handled == self._requested:
                self._idle.set()

    async def _quiet_period(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.max_delay
        while True:
            self._wakeup.clear()
            window = min(self.debounce, give_up_at - loop.time())
            if window <= 0:
                return
            try:
                async with asyncio.timeout(window):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    async def _deliver(self, versions: Mapping[str, str]) -> None:
        if not self.notifiers:
            return
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._deliver_one(notifier, versions), name=f"notify-{notifier.name}")
                for notifier in self.notifiers
            ]
        if self.on_delivered is not None and all(task.result() for task in tasks):
            self.on_delivered(versions)

    async def _deliver_one(self, notifier: Notifier, versions: Mapping[str, str]) -> bool:
        for attempt in range(1, self.max_attempts + 1):
            try:
                await notifier.notify(versions)
            except AgentError as error:
                problem = str(error)
            except Exception as error:
                problem = f"unexpected {type(error).__name__}"
                log.exception("%s notifier raised unexpectedly", notifier.name)
            else:
                self._report(notifier.name, True)
                return True
            self._report(notifier.name, False)
            if attempt == self.max_attempts:
                log.error(
                    "%s notifier gave up after %s: %s",
                    notifier.name,
                    plural(self.max_attempts, "attempt"),
                    problem,
                )
                return False
            log.warning(
                "%s notifier failed (attempt %d of %d): %s",
                notifier.name,
                attempt,
                self.max_attempts,
                problem,
            )
            if await self._superseded_within(self.backoff.delay(attempt - 1)):
                log.info("%s notifier: newer secrets arrived; the next round notifies again", notifier.name)
                return False
        return False  # not reached: the last attempt returns above

    async def _superseded_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True early if a new request arrived (it will be delivered by the next round)."""
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    def _report(self, name: str, ok: bool) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(name, ok)
        except Exception:  # metrics must never break notifications
            log.exception("on_result hook failed")
