"""The secrets API: create, read and rotate secrets in Secret Manager or a local .env file.

Importing this package starts nothing: no client, no channel, no event loop, no thread. The module-level
functions use ``default_manager()`` (chosen from the environment, see ``agent.secrets.default``), one
manager per call; hold a manager yourself (``async with SecretManager(...)``) for many calls.
"""

from __future__ import annotations

from agent.secrets.default import default_manager
from agent.secrets.interface import (
    ConcurrentModification,
    SecretInfo,
    SecretNotFound,
    SecretsBackend,
    SecretsError,
    VersionInfo,
    VersionNotEnabled,
)
from agent.secrets.local import LocalSecretManager
from agent.secrets.manager import SecretManager
from agent.secrets.types import TYPE_LABEL, SecretType

__all__ = [
    "TYPE_LABEL",
    "ConcurrentModification",
    "LocalSecretManager",
    "SecretInfo",
    "SecretManager",
    "SecretNotFound",
    "SecretType",
    "SecretsBackend",
    "SecretsError",
    "VersionInfo",
    "VersionNotEnabled",
    "default_manager",
    "get_secret",
    "get_secret_bytes",
    "rotate_secret",
]


async def get_secret(secret_id: str, version: str = "latest") -> str:
    """The value of ``secret_id`` as text, from the default manager."""
    manager = default_manager()
    try:
        return await manager.get_secret(secret_id, version)
    finally:
        await manager.close()


async def get_secret_bytes(secret_id: str, version: str = "latest") -> bytes:
    """The value of ``secret_id`` as bytes, from the default manager."""
    manager = default_manager()
    try:
        return await manager.get_secret_bytes(secret_id, version)
    finally:
        await manager.close()


async def rotate_secret(secret_id: str) -> str:
    """Rotate ``secret_id`` through the default manager; return the new version number."""
    manager = default_manager()
    try:
        return await manager.rotate_secret(secret_id)
    finally:
        await manager.close()
