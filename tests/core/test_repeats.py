"""Failure warnings during an outage: the first at once, then one a minute with a count, then recovery."""

from __future__ import annotations

from agent.core.retry import RepeatedFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_failure_is_logged_then_one_line_a_minute_with_what_was_held_back() -> None:
    clock = Clock()
    failures = RepeatedFailures(interval=60, clock=clock)

    decisions = []
    for _ in range(130):  # a retry every second for 130 s
        decisions.append(failures.failed("db", "UNAVAILABLE"))
        clock.now += 1

    logged = [(second, held) for second, held in enumerate(decisions) if held is not None]
    assert logged == [(0, 0), (60, 59), (120, 59)]


def test_a_new_status_is_logged_at_once() -> None:
    clock = Clock()
    failures = RepeatedFailures(interval=60, clock=clock)

    assert failures.failed("db", "UNAVAILABLE") == 0
    assert failures.failed("db", "UNAVAILABLE") is None
    assert failures.failed("db", "PERMISSION_DENIED") == 0


def test_secrets_are_counted_apart_and_a_success_ends_the_streak() -> None:
    clock = Clock()
    failures = RepeatedFailures(interval=60, clock=clock)

    assert failures.failed("db", "UNAVAILABLE") == 0
    assert failures.failed("api", "UNAVAILABLE") == 0
    assert failures.failed("db", "UNAVAILABLE") is None
    assert failures.succeeded("db") == 2
    assert failures.succeeded("db") == 0  # nothing was failing any more
    assert failures.failed("db", "UNAVAILABLE") == 0  # a new outage is news again
    assert failures.failed("api", "UNAVAILABLE") is None
