"""Single config values: the zero-allowing delay parser against every spelling of zero, and garbage."""

from __future__ import annotations

import pytest

from agent.config.values import parse_delay, parse_duration


@pytest.mark.parametrize(
    "zero",
    ["0", "0s", "0.0", ".0s", "0ms", 0, 0.0, " 0 ", "00", "0.", "0m", "0h", "0.000ms", ".0"],
)
def test_parse_delay_accepts_zero_in_every_spelling(zero: object) -> None:
    assert parse_delay(zero) == 0.0


@pytest.mark.parametrize("zero", ["0", "0s", "0.0", ".0s", "0ms", 0])
def test_parse_duration_still_refuses_zero(zero: object) -> None:
    # Intervals and timeouts must be positive; only delays (debounces, jitter caps) may be 0.
    with pytest.raises(ValueError, match="expected a positive, finite duration"):
        parse_duration(zero)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1s", 1.0), ("1500ms", 1.5), ("0.5", 0.5), (2, 2.0), ("1m30s", 90.0), (".5s", 0.5)],
)
def test_parse_delay_reads_other_durations_like_parse_duration(value: object, expected: float) -> None:
    assert parse_delay(value) == expected == parse_duration(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "expected a positive, finite duration, got '-1'"),
        ("-0.5", "expected a positive, finite duration, got '-0.5'"),
        ("-0", "expected a positive, finite duration, got '-0'"),
        (-1, "expected a positive, finite duration, got -1"),
        (-0.1, "expected a positive, finite duration, got -0.1"),
        ("inf", "expected a positive, finite duration, got 'inf'"),
        ("-1s", "expected a duration such as 30s, 5m, 1h or 1500ms, got '-1s'"),
        ("-0s", "expected a duration such as 30s, 5m, 1h or 1500ms, got '-0s'"),
        ("abc", "expected a duration such as 30s, 5m, 1h or 1500ms, got 'abc'"),
        ("", "expected a duration such as 30s, 5m, 1h or 1500ms, got ''"),
        ("ms", "expected a duration such as 30s, 5m, 1h or 1500ms, got 'ms'"),
        ("0x", "expected a duration such as 30s, 5m, 1h or 1500ms, got '0x'"),
        ("0d", "expected a duration such as 30s, 5m, 1h or 1500ms, got '0d'"),
        ("0 s", "expected a duration such as 30s, 5m, 1h or 1500ms, got '0 s'"),
        ("nan", "expected a duration such as 30s, 5m, 1h or 1500ms, got 'nan'"),
        (False, "expected a duration such as 30s, 5m, 1h or 1500ms, got false"),
        (None, "expected a duration such as 30s, 5m, 1h or 1500ms, got null"),
        ([0], "expected a duration such as 30s, 5m, 1h or 1500ms, got a list"),
    ],
)
def test_parse_delay_refuses_negatives_and_garbage(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_delay(value)
    assert str(caught.value) == message
