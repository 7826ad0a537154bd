"""retry_transient: which errors are retried, how long we wait, and when we give up (pure: fake clock)."""

from __future__ import annotations

import random

import pytest

from agent.core.retry import Backoff, retry_transient
from agent.errors import PermanentSourceError, SourceError, TransientSourceError


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class MaxJitter(random.Random):
    """Full jitter that always draws the cap, so delays are exactly the schedule's caps."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Flaky:
    """Fails with the given errors in order, then returns "ok"; counts calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def unavailable(n: int = 0) -> TransientSourceError:
    return TransientSourceError(f"ref: UNAVAILABLE: attempt {n}", code="UNAVAILABLE", ref="ref")


async def test_transient_errors_are_retried_until_success_and_reported() -> None:
    clock = FakeClock()
    first, second = unavailable(1), unavailable(2)
    operation = Flaky(first, second)
    seen: list[tuple[SourceError, int, float]] = []

    result = await retry_transient(
        operation,
        backoff=Backoff(initial=0.5, maximum=30.0),
        on_retry=lambda error, attempt, delay: seen.append((error, attempt, delay)),
        sleep=clock.sleep,
        rng=random.Random(7),
        monotonic=clock.monotonic,
    )

    assert result == "ok"
    assert operation.calls == 3
    assert [(e, a) for e, a, _ in seen] == [(first, 1), (second, 2)]
    # The hook is told the delay that is then actually slept, and full jitter stays within each cap.
    assert [d for _, _, d in seen] == clock.sleeps
    assert 0.0 <= clock.sleeps[0] <= 0.5
    assert 0.0 <= clock.sleeps[1] <= 1.0


async def test_delays_follow_capped_exponential_caps() -> None:
    clock = FakeClock()
    operation = Flaky(*(unavailable(i) for i in range(5)))
    await retry_transient(
        operation,
        backoff=Backoff(initial=0.5, maximum=3.0, multiplier=2.0),
        sleep=clock.sleep,
        rng=MaxJitter(),
        monotonic=clock.monotonic,
    )
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_full_jitter_spreads_delays_instead_of_synchronising_retries() -> None:
    delays: list[float] = []
    for seed in range(20):
        clock = FakeClock()
        await retry_transient(
            Flaky(unavailable()),
            backoff=Backoff(initial=10.0),
            sleep=clock.sleep,
            rng=random.Random(seed),
            monotonic=clock.monotonic,
        )
        delays += clock.sleeps
    assert all(0.0 <= d <= 10.0 for d in delays)
    assert len({round(d, 6) for d in delays}) == len(delays)  # pods that failed together retry apart


async def test_permanent_errors_propagate_at_once() -> None:
    clock = FakeClock()
    forbidden = PermanentSourceError("ref: PERMISSION_DENIED: no", code="PERMISSION_DENIED")
    operation = Flaky(forbidden)
    with pytest.raises(PermanentSourceError) as raised:
        await retry_transient(operation, backoff=Backoff(), sleep=clock.sleep, monotonic=clock.monotonic)
    assert raised.value is forbidden
    assert operation.calls == 1
    assert clock.sleeps == []


async def test_other_exceptions_are_not_retried() -> None:
    clock = FakeClock()
    operation = Flaky(ValueError("a bug, not an outage"))
    with pytest.raises(ValueError, match="a bug"):
        await retry_transient(operation, backoff=Backoff(), sleep=clock.sleep, monotonic=clock.monotonic)
    assert operation.calls == 1


async def test_attempt_limit_raises_the_last_transient_error() -> None:
    clock = FakeClock()
    errors = [unavailable(i) for i in range(5)]
    operation = Flaky(*errors)
    with pytest.raises(TransientSourceError) as raised:
        await retry_transient(
            operation, backoff=Backoff(), attempts=3, sleep=clock.sleep, monotonic=clock.monotonic
        )
    assert operation.calls == 3
    assert raised.value is errors[2]
    assert len(clock.sleeps) == 2


async def test_deadline_stops_retrying_without_sleeping_past_it() -> None:
    clock = FakeClock()
    errors = [unavailable(i) for i in range(10)]
    operation = Flaky(*errors)
    with pytest.raises(TransientSourceError) as raised:
        await retry_transient(
            operation,
            backoff=Backoff(initial=4.0, maximum=4.0),
            deadline=10.0,
            sleep=clock.sleep,
            rng=MaxJitter(),
            monotonic=clock.monotonic,
        )
    # Calls at t=0, 4 and 8; a retry at 12 would be past the deadline, so the error at t=8 is final.
    assert operation.calls == 3
    assert raised.value is errors[2]
    assert clock.now == 8.0


async def test_a_deadline_already_passed_allows_one_attempt() -> None:
    clock = FakeClock()
    clock.now = 100.0
    operation = Flaky(unavailable())
    with pytest.raises(TransientSourceError):
        await retry_transient(
            operation, backoff=Backoff(), deadline=50.0, sleep=clock.sleep, monotonic=clock.monotonic
        )
    assert operation.calls == 1


async def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        await retry_transient(Flaky(), backoff=Backoff(), attempts=0)


async def test_a_predicate_narrows_which_transient_errors_are_retried() -> None:
    """As SecretManager does for a write: repeated after a quota refusal, never after UNAVAILABLE."""
    clock = FakeClock()
    quota = TransientSourceError("ref: RESOURCE_EXHAUSTED: quota", code="RESOURCE_EXHAUSTED")
    lost = unavailable(2)
    operation = Flaky(quota, lost)
    seen: list[str] = []
    with pytest.raises(TransientSourceError) as raised:
        await retry_transient(
            operation,
            backoff=Backoff(),
            attempts=5,
            retryable=lambda error: error.code == "RESOURCE_EXHAUSTED",
            on_retry=lambda error, attempt, delay: seen.append(error.code),
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
    assert raised.value is lost
    assert operation.calls == 2
    assert seen == ["RESOURCE_EXHAUSTED"]
    assert len(clock.sleeps) == 1
