"""Secret sources: one module per backend, all behind the small ``Source`` protocol.

A source turns a ``SecretSpec`` into a verified ``Fetched`` value, or raises ``PermanentSourceError`` /
``TransientSourceError`` (from ``agent.errors``) whose text never holds a value. Retrying is the caller's
business except where a source documents otherwise.

``gcp`` (Secret Manager) and ``dotenv`` (a watched ``.env``) are the sources; ``errors`` is the one
translation of Google's exceptions; ``credentials`` finds Application Default Credentials. The change feed:
``pubsub`` (one Pub/Sub subscription lifecycle, also used by ``rotate --listen``), ``events`` (pure: what a
Secret Manager event means for a secret) and ``event_feed`` (the ``ChangeFeed`` built on both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from agent.config import SecretSpec
from agent.core.model import Fetched


class Source(Protocol):
    name: str
    """``gcp`` or ``dotenv``: used in logs and metrics."""

    async def fetch(self, spec: SecretSpec) -> Fetched:
        """The value of ``spec.ref`` now (for ``latest``/aliases: whatever they resolve to), verified."""
        ...

    async def current_version(self, spec: SecretSpec) -> str:
        """The version ``spec.ref`` resolves to now, without reading the value (metadata-only check)."""
        ...

    async def close(self) -> None:
        """Release connections; the source is not used afterwards."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A source (or event subscription) that can tell when values may have changed, instead of polling."""

    def changes(self) -> AsyncIterator[frozenset[str] | None]:
        """Yields the local names that may have changed (``None``: possibly all), until cancelled."""
        ...
