"""The supervisor: stop stops everything, the first failure stops everything, nothing outlives it; listeners
bind before any other part starts, and a listener that cannot bind stops everything with its own error."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from agent.errors import AgentError
from agent.supervisor import PartFailed, signal_handlers, supervise

if TYPE_CHECKING:
    from agent.supervisor import Listener, Part


async def forever(cancelled: list[str], name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        cancelled.append(name)


async def test_stop_event_cancels_every_part() -> None:
    cancelled: list[str] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_soon(stop.set)
    await supervise({"a": forever(cancelled, "a"), "b": forever(cancelled, "b")}, stop, grace=1)
    assert sorted(cancelled) == ["a", "b"]


async def test_first_failure_cancels_the_rest_and_is_reported_by_name() -> None:
    cancelled: list[str] = []

    async def broken() -> None:
        await asyncio.sleep(0)
        raise OSError("disk on fire")

    with pytest.raises(PartFailed, match=r"sync failed: OSError: disk on fire") as caught:
        await supervise({"sync": broken(), "reload": forever(cancelled, "reload")}, asyncio.Event(), grace=1)
    assert cancelled == ["reload"]
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_part_that_returns_is_a_failure() -> None:
    async def quits() -> None:
        return None

    with pytest.raises(PartFailed, match="returned"):
        await supervise({"watch": quits()}, asyncio.Event(), grace=1)


async def test_signals_set_stop_and_sighup_calls_the_refresh_hook() -> None:
    stop = asyncio.Event()
    refreshed = asyncio.Event()
    with signal_handlers(stop, on_hup=refreshed.set):
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(refreshed.wait(), 5)
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
    # Handlers are removed afterwards: the default disposition of SIGHUP is back.
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


# -- listeners first: nothing starts (or writes) before every socket is bound ------------------------------


def listener_on(port: int, events: list[str], name: str) -> Listener:
    """A real listener on 127.0.0.1:``port`` that reports its bind as the agent's listeners do."""

    def listener(started: Callable[[int], None]) -> Part:
        async def serve() -> None:
            try:
                server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
            except OSError as error:
                raise AgentError(
                    f"{name} cannot listen on 127.0.0.1:{port}: {os.strerror(error.errno or 0)}"
                ) from None
            async with server:
                events.append(f"{name} bound")
                started(server.sockets[0].getsockname()[1])
                await asyncio.Event().wait()

        return serve()

    return listener


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_parts_start_only_once_every_listener_is_bound_and_listening_has_run() -> None:
    events: list[str] = []
    stop = asyncio.Event()

    async def part(name: str) -> None:
        events.append(f"{name} started")
        stop.set()
        await asyncio.Event().wait()

    await supervise(
        {"sync": part("sync")},
        stop,
        grace=1,
        listeners={
            "endpoint": listener_on(0, events, "endpoint"),
            "probes": listener_on(0, events, "probes"),
        },
        listening=lambda: events.append("token written"),
    )
    assert sorted(events[:2]) == ["endpoint bound", "probes bound"]
    assert events[2:] == ["token written", "sync started"]


async def test_a_listener_that_cannot_bind_stops_everything_before_any_part_starts(taken_port: int) -> None:
    events: list[str] = []

    async def part() -> None:
        events.append("sync started")

    with pytest.raises(AgentError) as caught:
        await supervise(
            {"sync": part()},
            asyncio.Event(),
            grace=1,
            listeners={
                "endpoint": listener_on(taken_port, events, "endpoint"),
                "probes": listener_on(0, events, "probes"),
            },
            listening=lambda: events.append("token written"),
        )
    # The listener's own error, as it is: no "<part> failed: AgentError:" wrapping.
    assert str(caught.value) == f"endpoint cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    assert not isinstance(caught.value, PartFailed)
    assert "token written" not in events
    assert "sync started" not in events
    gc.collect()  # the part that never started was closed: no "coroutine ... was never awaited" here


async def test_every_listener_that_cannot_bind_is_named_in_one_error(taken_port: int) -> None:
    with pytest.raises(AgentError) as caught:
        await supervise(
            {},
            asyncio.Event(),
            grace=1,
            listeners={
                "endpoint": listener_on(taken_port, [], "endpoint"),
                "probes": listener_on(taken_port, [], "probes"),
            },
        )
    assert str(caught.value) == (
        f"endpoint cannot listen on 127.0.0.1:{taken_port}: Address already in use; "
        f"probes cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    )


async def test_parts_failing_together_are_all_reported_and_none_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unhandled: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))

    async def broken(message: str) -> None:
        raise OSError(message)

    with pytest.raises(PartFailed, match="first failed: OSError: one"):
        await supervise({"first": broken("one"), "second": broken("two")}, asyncio.Event(), grace=1)
    gc.collect()  # a task whose exception nobody retrieved reports it to the handler when collected
    assert unhandled == []
    assert "second failed: OSError: two" in caplog.text
