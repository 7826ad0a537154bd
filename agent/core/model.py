"""The data that flows through the agent: what was fetched, and the snapshot every output is built from.

Nothing here ever renders a secret value: ``repr`` of these types shows names, versions and checksums only,
so an accidental ``log.debug("%r", fetched)`` cannot leak a value.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import google_crc32c


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``, as Secret Manager reports it in ``payload.data_crc32c``."""
    return int(google_crc32c.value(data))


@dataclass(frozen=True)
class Fetched:
    """One secret value as delivered by a source, already verified."""

    name: str
    """Local name (``SecretSpec.name``)."""
    version: str
    """Resolved version: the Secret Manager version number ("3"), or a content tag for ``.env`` values."""
    data: bytes = field(repr=False)
    """The value. Never logged, never in an exception, never in a metric label."""
    crc32c: int
    """CRC32C of ``data`` (verified against the backend's ``data_crc32c`` by the source)."""
    fetched_at: float = field(default_factory=time.time, compare=False)
    """Unix time of the successful fetch (or check that found it unchanged)."""

    def same_value(self, other: Fetched | None) -> bool:
        """True when ``other`` holds the same version and bytes (the check time does not matter)."""
        return other is not None and (self.version, self.crc32c, self.data) == (
            other.version,
            other.crc32c,
            other.data,
        )


@dataclass(frozen=True)
class Snapshot:
    """A complete, consistent set of secret values: every sink and the endpoint read one whole snapshot."""

    items: Mapping[str, Fetched] = field(default_factory=lambda: MappingProxyType({}))
    """Local name -> value."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", MappingProxyType(dict(self.items)))

    def __iter__(self) -> Iterator[Fetched]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def get(self, name: str) -> Fetched | None:
        return self.items.get(name)

    def versions(self) -> dict[str, str]:
        """Local name -> version, safe to log."""
        return {name: f.version for name, f in self.items.items()}

    def with_updates(self, updates: Iterable[Fetched]) -> Snapshot:
        """A new snapshot with ``updates`` replacing (or adding) their names."""
        merged = dict(self.items)
        merged.update({f.name: f for f in updates})
        return Snapshot(merged)
