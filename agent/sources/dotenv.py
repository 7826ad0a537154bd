"""A ``.env`` file as a source, for local development, watched so that edits re-sync within a second.

Values are parsed by python-dotenv's own parser and never touch ``os.environ``. They are literal:
``${VAR}`` is not expanded (``interpolate=False``), because expansion would pull values from the agent's
own environment and would mangle secrets that contain ``$``.

Which key a secret reads: ``spec.env`` (the env variable name, by default the local name in UPPER_SNAKE
case); if the file has no such key, ``spec.name`` verbatim. The reference (``spec.ref``) is not used.

With no secrets configured, ``dev`` serves every key of the file: ``DotenvSource.keys()`` lists them and
``secrets_for_keys()`` makes each one a secret of the same name (file name and env entry: the key as
written). Only ``KEY=value`` lines whose key is an environment variable name are served; the others are
counted, never named (a line without ``=`` may well be a value pasted on a line of its own).

The version of a value is a content tag, ``dotenv-`` + 16 hex digits of an HMAC-SHA256 of the value under a
random key drawn once per process: an unchanged value keeps its version, so re-reading an edited file
rewrites only what really changed. Not a plain checksum: versions go into logs, metrics and notifications,
and a CRC32C (or any unkeyed hash) of a short or guessable value is an offline oracle for it. Across
restarts the sync loop keeps the tag an unchanged value is already served under (``agent.sync``).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import watchfiles
from dotenv import dotenv_values

from agent.config import SecretRef, SecretSpec
from agent.core.model import Fetched, crc32c
from agent.errors import PermanentSourceError

log = logging.getLogger(__name__)

FileKey = tuple[int, int, int, int]
"""(device, inode, size, mtime_ns): a replaced or edited file gives a new key."""


@dataclass(frozen=True)
class _Parsed:
    key: FileKey
    values: dict[str, str | None]


_VERSION_KEY = secrets.token_bytes(32)
"""The key of this process's content tags: never written anywhere, so a tag says nothing about a value."""
VERSION_DIGITS = 16
"""Hex digits of the HMAC in a tag: 64 bits, no collision among the values one developer edits."""


KEYS_PROJECT = "dotenv-keys"
"""The project of the references ``secrets_for_keys`` gives (never asked for: the dotenv source reads the
key). A reference is what the snapshot's manifest records, so a key served again after a restart is taken
back (adopted) only by a secret made the same way."""
_SERVABLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A key served as a secret of its own: an environment variable name, hence also a valid local name, file
name and secret id (no ``.``, no ``/``, nothing the agent reserves)."""


@dataclass(frozen=True)
class DotenvKeys:
    """The keys of a ``.env`` file that can be served as secrets of their own."""

    served: tuple[str, ...]
    """Keys with a value whose name is an environment variable name, in the file's order."""
    skipped: int
    """Entries left out: lines without ``=`` and keys that are not environment variable names."""


def secrets_for_keys(keys: Iterable[str]) -> tuple[SecretSpec, ...]:
    """One secret per key: named after it, written to a file of that name, ``KEY=`` in the env file."""
    return tuple(SecretSpec(name=key, ref=SecretRef(KEYS_PROJECT, key), env=key, file=key) for key in keys)


def content_version(data: bytes) -> str:
    """The version tag of a ``.env`` value: ``dotenv-`` + the first 16 hex digits of HMAC-SHA256(data) under
    this process's random key. Equal for equal bytes within one process, different for different bytes."""
    return "dotenv-" + hmac.new(_VERSION_KEY, data, hashlib.sha256).hexdigest()[:VERSION_DIGITS]


class DotenvSource:
    """Secret values from one ``.env`` file; also a ``ChangeFeed`` that reports edits of that file."""

    name = "dotenv"

    def __init__(self, path: Path, debounce: float = 0.1) -> None:
        self.path = Path(path)
        """The ``.env`` file."""
        self.debounce = debounce
        """Seconds a burst of file events is collected before one change is reported."""
        self._parsed: _Parsed | None = None
        # Set by the watcher: re-read even when (inode, size, mtime) look unchanged, because two edits in
        # one mtime tick with the same length would otherwise go unnoticed.
        self._stale = True

    async def fetch(self, spec: SecretSpec) -> Fetched:
        """The value of ``spec.env`` (else ``spec.name``) in the file, as UTF-8 bytes."""
        data = self._value_of(spec)
        return Fetched(name=spec.name, version=content_version(data), data=data, crc32c=crc32c(data))

    async def current_version(self, spec: SecretSpec) -> str:
        """The content tag of the current value (reading the file is as cheap as any metadata)."""
        return content_version(self._value_of(spec))

    async def close(self) -> None:
        """Nothing to release: the watcher lives only while ``changes()`` is iterated."""

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        """Yields ``None`` (every secret may have changed) once per burst of edits, until cancelled.

        Watches the file's parent directory, because editors save by writing a new file and renaming it
        over the old one, which a watch on the file itself would lose.
        """
        directory = self.path.absolute().parent
        if not directory.is_dir():
            raise PermanentSourceError(
                f"{self.path}: NOT_FOUND: cannot watch: directory {directory} does not exist",
                code="NOT_FOUND",
                ref=str(self.path),
                hint="create the directory, or point the dotenv source at an existing file",
            )
        target = self.path.name

        def is_target(_change: watchfiles.Change, changed: str) -> bool:
            return Path(changed).name == target

        async for _batch in watchfiles.awatch(
            directory,
            watch_filter=is_target,
            debounce=max(1, round(self.debounce * 1000)),
            step=min(50, max(1, round(self.debounce * 1000))),
            recursive=False,
        ):
            self._stale = True
            log.debug("%s changed", self.path)
            yield None

    def keys(self) -> DotenvKeys:
        """The keys the file holds now (see ``DotenvKeys``); raises PermanentSourceError like ``fetch``
        when the file cannot be read."""
        values = self._current().values
        served = tuple(
            key for key, value in values.items() if value is not None and _SERVABLE_KEY.fullmatch(key)
        )
        return DotenvKeys(served, len(values) - len(served))

    # -- reading -----------------------------------------------------------------------------------

    def _value_of(self, spec: SecretSpec) -> bytes:
        values = self._current().values
        key = spec.env if spec.env in values else spec.name
        if key not in values:
            keys = spec.env if spec.env == spec.name else f"{spec.env} (or {spec.name})"
            raise PermanentSourceError(
                f"{self.path}: NOT_FOUND: no key {keys} for secret {spec.name}",
                code="NOT_FOUND",
                ref=str(self.path),
                hint=f"add a line {spec.env}=... to {self.path}",
            )
        value = values[key]
        if value is None:
            raise PermanentSourceError(
                f"{self.path}: NOT_FOUND: key {key} for secret {spec.name} has no value (no '=')",
                code="NOT_FOUND",
                ref=str(self.path),
                hint=f"write {key}=VALUE in {self.path} (an empty value is {key}=)",
            )
        return value.encode("utf-8")

    def _current(self) -> _Parsed:
        """The parsed file, read again only when it changed: one read serves a whole batch of fetches."""
        parsed = self._parsed
        if parsed is not None and not self._stale and self._stat_key() == parsed.key:
            return parsed
        # Clear the flag before reading: an edit landing during the read sets it again.
        self._stale = False
        self._parsed = parsed = self._read()
        return parsed

    def _stat_key(self) -> FileKey | None:
        try:
            return _key_of(os.stat(self.path))
        except OSError:
            return None

    def _read(self) -> _Parsed:
        try:
            # Stat and content from the same open file, so the cache key describes exactly what was read.
            with open(self.path, "rb") as stream:
                key = _key_of(os.fstat(stream.fileno()))
                raw = stream.read()
        except FileNotFoundError as error:
            self._stale = True
            raise PermanentSourceError(
                f"{self.path}: NOT_FOUND: the .env file does not exist",
                code="NOT_FOUND",
                ref=str(self.path),
                hint=f"create {self.path} with KEY=value lines, or point the dotenv source elsewhere",
            ) from error
        except OSError as error:
            self._stale = True
            raise PermanentSourceError(
                f"{self.path}: PERMISSION_DENIED: cannot read the .env file: {error.strerror}",
                code="PERMISSION_DENIED",
                ref=str(self.path),
                hint="check the file's permissions and that it is a regular file",
            ) from error
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            self._stale = True
            line = raw[: error.start].count(b"\n") + 1
            # The line only, and no chained UnicodeDecodeError: its text quotes the offending byte.
            raise PermanentSourceError(
                f"{self.path}: INVALID_ARGUMENT: not valid UTF-8 (line {line})",
                code="INVALID_ARGUMENT",
                ref=str(self.path),
                hint="save the .env file as UTF-8",
            ) from None
        values = _parse(text)
        return _Parsed(key=key, values=values)


def _parse(text: str) -> dict[str, str | None]:
    # python-dotenv warns about unparsable lines by line number only, never with their text.
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


def _key_of(stat: os.stat_result) -> FileKey:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
