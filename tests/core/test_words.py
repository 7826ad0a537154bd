from __future__ import annotations

import pytest

from agent.core.words import plural


@pytest.mark.parametrize(
    ("count", "words", "said"),
    [
        (1, ("failed attempt",), "1 failed attempt"),
        (2, ("failed attempt",), "2 failed attempts"),
        (0, ("secret",), "0 secrets"),
        (1, ("entry", "entries"), "1 entry"),
        (3, ("entry", "entries"), "3 entries"),
    ],
)
def test_a_counted_noun_agrees_with_its_count(count: int, words: tuple[str, ...], said: str) -> None:
    assert plural(count, *words) == said
