"""The interface both managers implement (Secret Manager and a local .env file), and the records they return.

Rotation (``agent.rotation``) is written against ``SecretsBackend`` only, so it runs the same over the
emulator, Google, and a developer's .env file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from agent.errors import AgentError
from agent.secrets.types import SecretType


class SecretsError(AgentError):
    """A secrets API call failed. ``code`` is the status name (NOT_FOUND, ABORTED, ...). Never a value."""

    def __init__(self, message: str, *, code: str = "UNKNOWN", secret_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.secret_id = secret_id


class SecretNotFound(SecretsError):
    """The secret or version does not exist (NOT_FOUND)."""


class VersionNotEnabled(SecretsError):
    """The version exists but is DISABLED or DESTROYED, so its value cannot be read (FAILED_PRECONDITION)."""


class ConcurrentModification(SecretsError):
    """An etag-guarded write lost a race (the etag no longer matches: ABORTED / FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class VersionInfo:
    """One version's metadata (never its value)."""

    secret_id: str
    version: str
    """The version number as a string (``"3"``)."""
    state: str
    """``ENABLED``, ``DISABLED`` or ``DESTROYED``."""
    create_time: datetime
    """Timezone-aware UTC."""
    etag: str = ""


@dataclass(frozen=True)
class SecretInfo:
    """One secret's metadata."""

    secret_id: str
    secret_type: SecretType | None
    """From the ``secret-type`` label; ``None`` when absent or unknown."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    rotation_period: timedelta | None = None
    next_rotation_time: datetime | None = None
    topics: tuple[str, ...] = ()
    etag: str = ""
    create_time: datetime | None = None


class SecretsBackend(Protocol):
    """What ``SecretManager`` and ``LocalSecretManager`` both offer. All methods are coroutines.

    Each method's arguments, result and errors are documented on ``SecretManager``; ``LocalSecretManager``
    behaves the same over a ``.env`` file. Code written against this protocol (the rotation tooling is)
    runs unchanged on either.

    Every read and every change is written to the ``agent.audit`` logger as one event with the fields
    ``secret``, ``version``, ``operation``, ``result`` and ``caller`` -- never the value.
    """

    caller: str
    """Who is acting, for the audit log (default: ``user@host pid N``)."""

    async def create_secret(
        self,
        secret_id: str,
        secret_data: str | bytes,
        secret_type: SecretType,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Create the secret (label ``secret-type``, rotation policy from the type, the configured
        notification topics) and its first version; return that version."""
        ...

    async def delete_secret(self, secret_id: str, etag: str = "") -> None:
        """Delete the secret and every version (only if its etag is still ``etag``, when given)."""
        ...

    async def get_secret(self, secret_id: str, version: str = "latest") -> str:
        """The value as UTF-8 text (raises SecretsError if it is not valid UTF-8)."""
        ...

    async def get_secret_bytes(self, secret_id: str, version: str = "latest") -> bytes:
        """The value as bytes, checksum verified."""
        ...

    async def resolve_version(self, secret_id: str, version: str = "latest") -> VersionInfo:
        """Metadata of a version (``latest`` or an alias resolved to its number) without reading the value."""
        ...

    async def add_version(self, secret_id: str, secret_data: str | bytes) -> VersionInfo: ...

    async def list_versions(self, secret_id: str) -> list[VersionInfo]:
        """Every version, newest first."""
        ...

    async def enable_version(self, secret_id: str, version: str) -> VersionInfo: ...

    async def disable_version(self, secret_id: str, version: str) -> VersionInfo: ...

    async def destroy_version(self, secret_id: str, version: str) -> VersionInfo: ...

    async def get_secret_info(self, secret_id: str) -> SecretInfo: ...

    async def list_secrets(self, types: Sequence[SecretType] | None = None) -> list[SecretInfo]:
        """Every secret (of the given types, by label), sorted by id."""
        ...

    async def update_annotations(
        self,
        secret_id: str,
        set_: Mapping[str, str],
        remove: Sequence[str] = (),
        *,
        etag: str,
        current: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Change annotations only if the secret's etag is still ``etag``; else ConcurrentModification.
        The returned SecretInfo carries the new etag. (The rotation lock is built on this.) ``current``: the
        annotations as of ``etag``, when the caller has them (saves reading the secret first)."""
        ...

    async def set_next_rotation_time(self, secret_id: str, when: datetime) -> SecretInfo:
        """Move the rotation policy's next_rotation_time (after a successful rotation)."""
        ...

    async def rotate_secret(self, secret_id: str) -> str:
        """Rotate with the secret's provider (``agent.rotation``); return the new version number."""
        ...

    async def close(self) -> None: ...
