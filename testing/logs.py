"""Everything a process logged, as one text to grep for canary values (no secret value may ever appear)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest

from agent.observe.logs import FIELDS_KEY


def logged_text(logs: pytest.LogCaptureFixture | Iterable[logging.LogRecord]) -> str:
    """Every captured message with its structured fields and exception text."""
    records = logs.records if isinstance(logs, pytest.LogCaptureFixture) else logs
    parts = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(getattr(record, FIELDS_KEY, None)))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)
