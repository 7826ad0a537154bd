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
    # A signal storm fills asyncio's wake-up socket, and CPython then reports each byte it could not write
    # from inside its C signal handler, which can deadlock the process. One byte per burst is enough.
    signal.set_wakeup_fd(signal.set_wakeup_fd(-1), warn_on_full_buffer=False)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


Listener = Callable[[Callable[[int], None]], Part]
"""A part that binds a socket: called with ``started``, it returns the part, which calls ``started(port)``
once its socket is bound (``serve_endpoint``, ``serve_probes``)."""

_RETURNED = "returned; it should run until cancelled"


async def supervise(
    parts: Mapping[str, Part],
    stop: asyncio.Event,
    grace: float,
    *,
    listeners: Mapping[str, Listener] | None = None,
    listening: Callable[[], None] | None = None,
) -> None:
    """Run ``parts`` until ``stop`` is set or one of them ends; then cancel the rest within ``grace`` seconds.

    ``listeners`` start first; ``parts`` start only once every listener has bound its socket, right after
    ``listening()`` (e.g. writing the token the endpoint checks). So a listener that cannot bind (its port
    is taken) stops everything before any part ran or wrote a file: its AgentError is re-raised as it is
    (several at once, joined into one message), the other listeners are closed and ``parts`` never start.

    A part that ends by itself is a failure (parts run forever); its exception is re-raised as PartFailed.
    When several fail at once the first (in start order) is raised and the others are logged, one line each:
    no exception is left for asyncio to report as "never retrieved".
    """
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop")
    tasks: dict[asyncio.Task[Any], str] = {}
    done: set[asyncio.Task[Any]] = set()
    started = False
    try:
        if listeners:
            await _bind(listeners, tasks, stopper)
        if not stopper.done():
            if listening is not None:
                listening()
            started = True
            tasks.update({asyncio.create_task(coro, name=name): name for name, coro in parts.items()})
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not started:
            for coro in parts.values():
                coro.close()  # never started: closed, so nothing warns "coroutine was never awaited"
        await _cancel(tasks, grace)
    failures: list[PartFailed] = []
    for task, name in tasks.items():  # in start order: the same failure is reported first every time
        if task not in done or task.cancelled():
            continue
        error = task.exception()
        if error is not None:
            failures.append(_failed(name, error))
        elif not stop.is_set():
            failures.append(_failed(name, RuntimeError(_RETURNED)))
    for also in failures[1:]:
        log.error("%s", also)
    if failures:
        raise failures[0] from failures[0].__cause__


async def _bind(
    listeners: Mapping[str, Listener], tasks: dict[asyncio.Task[Any], str], stopper: asyncio.Task[Any]
) -> None:
    """Start ``listeners`` (added to ``tasks``) and wait until each one is bound or has failed, or until
    ``stopper`` is done. Raises when any failed: their AgentErrors as one, else PartFailed."""
    bound: dict[asyncio.Task[Any], asyncio.Event] = {}
    for name, listener in listeners.items():
        event = asyncio.Event()
        task = asyncio.create_task(listener(_setter(event)), name=name)
        tasks[task] = name
        bound[task] = event

    async def settled(task: asyncio.Task[Any], event: asyncio.Event) -> None:
        waiter = asyncio.create_task(event.wait())
        try:
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    # Binding is a listener's first step: waiting for all of them reports every taken port at once.
    everyone = asyncio.gather(*(settled(task, event) for task, event in bound.items()))
    try:
        await asyncio.wait([everyone, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not everyone.done():
            everyone.cancel()
            await asyncio.gather(everyone, return_exceptions=True)
    failed = [(tasks[task], task.exception()) for task in bound if task.done() and not task.cancelled()]
    if not failed:
        return
    problems = [error for _, error in failed if isinstance(error, AgentError)]
    if len(problems) == len(failed):
        # Our own errors already name the address and the setting: one line, no "<name> failed:" prefix.
        raise problems[0] if len(problems) == 1 else AgentError("; ".join(map(str, problems)))
    for name, error in failed:
        if not isinstance(error, AgentError):
            raise _failed(name, error if error is not None else RuntimeError(_RETURNED))


async def _cancel(tasks: Mapping[asyncio.Task[Any], str], grace: float) -> None:
    """Cancel the tasks still running and wait up to ``grace`` for them; one line for each that does not
    stop in time or fails while stopping (its exception is retrieved here, not left to asyncio)."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    finished, late = await asyncio.wait(pending, timeout=grace)
    for task in late:
        log.warning("%s did not stop within %.1fs of cancellation", tasks[task], grace)
    for task in finished:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s failed while stopping: %s: %s", tasks[task], type(error).__name__, error)


def _setter(event: asyncio.Event) -> Callable[[int], None]:
    def started(port: int) -> None:
        event.set()

    return started


def _failed(name: str, error: BaseException) -> PartFailed:
    failure = PartFailed(name, error)
    failure.__cause__ = error
    return failure
