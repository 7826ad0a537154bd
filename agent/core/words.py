"""Words in messages: counted nouns said right (``1 secret``, ``2 secrets``), for every stage's log lines."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 secret``, ``2 secrets``, ``0 secrets``; ``plural_form`` for irregular words (``entries``)."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"
