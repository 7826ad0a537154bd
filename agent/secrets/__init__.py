"""The secrets API: create, read and rotate secrets in Secret Manager or a local .env file.

Importing this package starts nothing: no client, no channel, no event loop, no thread.
"""

from agent.secrets.interface import (
    ConcurrentModification,
    SecretInfo,
    SecretNotFound,
    SecretsBackend,
    SecretsError,
    VersionInfo,
    VersionNotEnabled,
)
from agent.secrets.manager import SecretManager
from agent.secrets.types import TYPE_LABEL, SecretType

__all__ = [
    "TYPE_LABEL",
    "ConcurrentModification",
    "SecretInfo",
    "SecretManager",
    "SecretNotFound",
    "SecretType",
    "SecretsBackend",
    "SecretsError",
    "VersionInfo",
    "VersionNotEnabled",
]
