"""The collector's pause during start-up: on until paused, off while a command starts, then on with what
exists frozen; and as it was, whatever happened, once the command ends."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agent.core import collector


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    frozen = gc.get_freeze_count()
    yield
    assert gc.get_freeze_count() == frozen  # nothing left frozen by a test
    if not was:
        gc.disable()


def test_paused_until_the_start_is_done_then_on_with_start_ups_objects_frozen() -> None:
    before = gc.get_freeze_count()
    with collector.paused():
        assert not gc.isenabled()
        survivor = [object() for _ in range(100)]  # start-up's objects
        collector.startup_done()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(survivor)
    assert gc.isenabled()
    assert gc.get_freeze_count() == before  # handed back to the collector


def test_a_long_running_command_collects_start_ups_garbage_before_freezing() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    with collector.paused():
        Cycle()  # garbage only the cyclic collector can free
        collector.startup_done(long_running=True)
        assert not any(isinstance(o, Cycle) for o in gc.get_objects())


def test_an_error_during_start_up_turns_the_collector_back_on() -> None:
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("the configuration did not load")
    assert gc.isenabled()


def test_startup_done_outside_a_pause_changes_nothing() -> None:
    before = gc.get_freeze_count()
    collector.startup_done()
    assert gc.isenabled()
    assert gc.get_freeze_count() == before


def test_a_nested_pause_is_the_outer_one() -> None:
    with collector.paused():
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block did not turn it on
        collector.startup_done()
        assert gc.isenabled()
    assert gc.isenabled()


def test_a_collector_switched_off_by_the_embedder_stays_off() -> None:
    gc.disable()
    with collector.paused():
        collector.startup_done()
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
