"""The rotation tooling's entry point for the secrets API: ``SecretManager.rotate_secret`` and
``LocalSecretManager.rotate_secret`` (and ``agent.secrets.rotate_secret``) end here, found through the
``secrets_agent.rotation`` entry point (see ``agent.secrets.rotating``)."""

from __future__ import annotations

from agent.rotation.config import RotationConfig
from agent.rotation.engine import rotate_one
from agent.rotation.results import RotationOptions
from agent.secrets.interface import SecretsBackend, SecretsError


async def rotate_with_provider(backend: SecretsBackend, secret_id: str, config: object | None) -> str:
    """Rotate ``secret_id`` on ``backend`` with its provider; the new version number, or SecretsError."""
    if config is not None and not isinstance(config, RotationConfig):
        raise TypeError(f"rotation_config must be a RotationConfig, got {type(config).__name__}")
    result = await rotate_one(backend, secret_id, RotationOptions(config=config))
    if result.result != "rotated":
        raise SecretsError(result.message, code="ABORTED", secret_id=secret_id)
    return str(result.new_version)
