"""Runs the agent's long-lived parts as named tasks: signals stop them, and the first failure stops all.

Each part is one coroutine that runs until cancelled (kopf's ``run_tasks`` shape). Signals are handled here
and only here: SIGTERM/SIGINT set the stop event, SIGHUP calls a "refresh now" hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

from agent.errors import AgentError

log = logging.getLogger(__name__)

Part = Coroutine[Any, Any, None]


class PartFailed(AgentError):
    """A supervised part ended with an exception; the original is the ``__cause__``."""

    def __init__(self, name: str, cause: BaseException) -> None:
        # Our exceptions never carry values, so naming the cause is safe and saves a trip to the logs.
        super().__init__(f"{name} failed: {type(cause).__name__}: {cause}")
        self.name = name


@contextlib.contextmanager
def signal_handlers(stop: asyncio.Event, on_hup: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM/SIGINT -> ``stop``; SIGHUP -> ``on_hup`` (when given). Restores the defaults afterwards."""
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
        handled.append(sig)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        handled.append(signal.SIGHUP)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def supervise(parts: Mapping[str, Part], stop: asyncio.Event, grace: float) -> None:
    """Run ``parts`` until ``stop`` is set or one of them ends; then cancel the rest within ``grace`` seconds.

    A part that ends by itself is a failure (parts run forever); its exception is re-raised as PartFailed.
    """
    tasks: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(coro, name=name): name for name, coro in parts.items()
    }
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                log.warning("%s did not stop within %.1fs of cancellation", tasks[task], grace)
    for task in done:
        if task is stopper or task.cancelled():
            continue
        error = task.exception()
        name = tasks[task]
        if error is not None:
            raise PartFailed(name, error) from error
        if not stop.is_set():
            returned = RuntimeError("returned; it should run until cancelled")
            raise PartFailed(name, returned) from returned
