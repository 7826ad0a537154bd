"""The secrets API: create, read and rotate secrets in Secret Manager or a local .env file.

```python
from agent.secrets import SecretManager, LocalSecretManager, SecretType, get_secret, rotate_secret

sm = SecretManager()                      # project from the environment / ADC
value = await sm.get_secret("db-password")
await sm.create_secret("api-key", "value", secret_type=SecretType.API_KEY)

local = LocalSecretManager()              # reads ./.env
value = await local.get_secret("API_KEY")

value = await get_secret("db-password")  # module level, default manager
```

Importing this package starts nothing: no client, no channel, no event loop, no thread; constructing a
manager only reads the environment. The module-level functions use ``default_manager()`` (chosen from the
environment, see ``agent.secrets.default``), one manager per call; hold a manager yourself
(``async with SecretManager() as sm``) for many calls.
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
    """A secret's value as text, from the default manager (``default_manager()``).

    Args:
        secret_id: The secret's id (with a ``.env``: its key).
        version: A version number, ``latest`` or (Secret Manager) an alias.

    Returns:
        The value, decoded as UTF-8.

    Raises:
        ConfigError: The environment selects no manager (see ``default_manager``).
        SecretNotFound: There is no such secret or version.
        VersionNotEnabled: The version is DISABLED or DESTROYED.
        SecretsError: Any other failure (no project anywhere, not UTF-8, ...); never with the value in it.
    """
    manager = default_manager()
    try:
        return await manager.get_secret(secret_id, version)
    finally:
        await manager.close()


async def get_secret_bytes(secret_id: str, version: str = "latest") -> bytes:
    """A secret's value as bytes, from the default manager (``default_manager()``).

    Args:
        secret_id: The secret's id.
        version: A version number, ``latest`` or (Secret Manager) an alias.

    Returns:
        The value.

    Raises:
        ConfigError: The environment selects no manager (see ``default_manager``).
        SecretNotFound: There is no such secret or version.
        VersionNotEnabled: The version is DISABLED or DESTROYED.
        SecretsError: Any other failure (a checksum mismatch is ``DATA_LOSS``); never with the value in it.
    """
    manager = default_manager()
    try:
        return await manager.get_secret_bytes(secret_id, version)
    finally:
        await manager.close()


async def rotate_secret(secret_id: str, *, rotation_config: object | None = None) -> str:
    """Rotate a secret through the default manager (``default_manager()``) and its rotation provider.

    Encryption keys, JWT and session secrets rotate with a new random value as they are; a database, an
    API key or an OAuth token needs a provider configured in a rotation config file, passed here (see
    ``SecretManager.rotate_secret``).

    Args:
        secret_id: The secret's id.
        rotation_config: The path of a rotation config file (the one ``secrets-agent rotate --config``
            reads), its content as a mapping, or a ``RotationConfig``; None: labels and type defaults.

    Returns:
        The new version number.

    Raises:
        ConfigError: The environment selects no manager (see ``default_manager``).
        SecretNotFound: There is no such secret.
        SecretsError: No provider is configured (the message says what to configure), or the rotation
            failed or was rolled back; never with a value in it.
    """
    manager = default_manager(rotation_config=rotation_config)
    try:
        return await manager.rotate_secret(secret_id)
    finally:
        await manager.close()
