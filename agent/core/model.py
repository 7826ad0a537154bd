"""The data that flows through the agent: what was fetched, and the snapshot every output is built from.

Nothing here ever renders a secret value: ``repr`` of these types shows names, versions and checksums only,
so an accidental ``log.debug("%r", fetched)`` cannot leak a value.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Literal

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


OutputKind = Literal["secret", "key", "template"]


@dataclass(frozen=True)
class Output:
    """One thing the app reads, rendered from a snapshot: a secret's file/env variable, one key of a JSON or
    YAML secret, or a template's output. ``repr`` shows where it goes, never the bytes."""

    kind: OutputKind
    owner: str
    """The secret's name (kinds ``secret`` and ``key``) or the template's name."""
    data: bytes = field(repr=False)
    version: str
    """The secret's version (``secret``, ``key``), or for a template ``t`` + a hash of its inputs' names and
    versions (never of its bytes)."""
    crc32c: int
    file: str | None = None
    """Path inside ``output_dir``, or None (env only)."""
    env: str | None = None
    """Environment variable name, or None (file only)."""
    mode: int = 0o440
    uid: int | None = None
    gid: int | None = None
    key: str | None = None
    """The key as configured (kind ``key``, or a secret's own ``key``)."""
    fetched_at: float = field(default=0.0, compare=False)
    """Unix time its newest input was fetched (the endpoint's ``Last-Modified``)."""

    @property
    def described(self) -> str:
        """How log lines name it: ``secret 'db'``, ``secret 'db' key 'password'``, ``template 'url'``."""
        if self.kind == "template":
            return f"template {self.owner!r}"
        return f"secret {self.owner!r} key {self.key!r}" if self.kind == "key" else f"secret {self.owner!r}"

    @property
    def label(self) -> str:
        """How messages and the endpoint name it: ``db``, ``db[password]``, ``template database-url``."""
        if self.kind == "template":
            return f"template {self.owner}"
        return f"{self.owner}[{self.key}]" if self.kind == "key" else self.owner


@dataclass(frozen=True)
class Snapshot:
    """A complete, consistent set of secret values: every sink and the endpoint read one whole snapshot."""

    items: Mapping[str, Fetched] = field(default_factory=lambda: MappingProxyType({}))
    """Local name -> value."""
    outputs: tuple[Output, ...] | None = None
    """What the app reads, rendered from ``items`` (``agent.render``); None until rendered. Every file and
    env entry of the snapshot comes from here."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", MappingProxyType(dict(self.items)))

    def with_outputs(self, outputs: Iterable[Output]) -> Snapshot:
        """The same values with their rendered outputs."""
        return Snapshot(self.items, tuple(outputs))

    def secret_output(self, name: str) -> Output | None:
        """The rendered own output of secret ``name`` (None when not delivered, or not rendered)."""
        return self._secret_outputs.get(name)

    def file_outputs(self) -> Mapping[str, Output]:
        """Rendered outputs that are files, by path inside ``output_dir`` (computed once per snapshot)."""
        return self._file_outputs

    # A frozen dataclass may still hold cached_property values: they go to the instance __dict__ directly.
    @cached_property
    def _secret_outputs(self) -> dict[str, Output]:
        return {o.owner: o for o in self.outputs or () if o.kind == "secret"}

    @cached_property
    def _file_outputs(self) -> Mapping[str, Output]:
        return MappingProxyType({o.file: o for o in self.outputs or () if o.file is not None})

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

    def without(self, names: Iterable[str]) -> Snapshot:
        """A new snapshot without the values of ``names`` (names it does not hold are ignored), not rendered:
        the outputs made from them are for the renderer to leave out."""
        gone = set(names)
        return Snapshot({name: f for name, f in self.items.items() if name not in gone})
