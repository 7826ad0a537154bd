"""Sinks: where a Snapshot is written. Files (atomic directory swap) and the env file go in ONE swap."""

from __future__ import annotations

from typing import Protocol

from agent.core.model import Snapshot


class Sink(Protocol):
    def write(self, snapshot: Snapshot) -> bool:
        """Write the whole snapshot atomically; True when anything on disk changed, False when identical.

        Raises ``SinkError`` (message without values) when it cannot; the previous snapshot is then intact.
        Synchronous: callers run it in a worker thread.
        """
        ...
