"""The supervisor: stop stops everything, the first failure stops everything, nothing outlives it."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from agent.supervisor import PartFailed, signal_handlers, supervise


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
