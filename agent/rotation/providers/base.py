"""The provider interface: how a new credential is made, put in place, checked and taken back.

A provider is chosen per secret (rotation config file, or the ``rotation-provider`` label, or the type's
default) and built from its settings mapping. Providers never log values and never put them in errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from agent.errors import AgentError
from agent.secrets.types import SecretType

MAX_VALUE_BYTES: Final = 65536
"""Secret Manager's payload limit: a longer new value cannot become a version."""


def strip_newline(output: bytes) -> bytes:
    """Drop one trailing newline (``\\n`` or ``\\r\\n``), as ``$(...)`` in a shell would (only one)."""
    if output.endswith(b"\r\n"):
        return output[:-2]
    if output.endswith(b"\n"):
        return output[:-1]
    return output


class ProviderError(AgentError):
    """A provider step failed; the message says which step and why, never a value."""


class ProviderConfigError(ProviderError):
    """The provider's settings are invalid (unknown provider, missing setting, bad length...)."""


class ValidationFailed(ProviderError):
    """The new credential did not pass validation; the rotation rolls back."""


@dataclass(frozen=True)
class RotationContext:
    """What a provider knows about the rotation in progress."""

    secret_id: str
    secret_type: SecretType | None
    old_version: str | None
    """The version being replaced (``None`` when the secret has no enabled version)."""
    old_value: bytes | None = field(repr=False)
    """Its value (needed to restore a database password on rollback). Never log it."""


class Provider(Protocol):
    """generate -> apply -> (the engine adds the version) -> validate; rollback undoes apply."""

    name: str

    async def generate(self, ctx: RotationContext) -> bytes:
        """A new value. Pure: no side effect outside this process."""
        ...

    async def apply(self, ctx: RotationContext, new_value: bytes) -> None:
        """Put the new value where it must be in force (database role password); no-op for most."""
        ...

    async def validate(self, ctx: RotationContext, new_value: bytes) -> None:
        """Raise ValidationFailed (with a reason, never the value) unless the new value works."""
        ...

    async def rollback(self, ctx: RotationContext, new_value: bytes) -> None:
        """Undo ``apply``: restore ``ctx.old_value`` where it was applied. Must be safe to call twice and
        when apply never ran."""
        ...


ProviderSettings = Mapping[str, Any]
"""A provider's settings from the rotation config file or labels (``provider`` key included)."""
