"""Which secrets ``secrets-agent rotate WORD...`` means.

Each word is a group (``all``, ``symmetric``, ``api-keys``, ``database``, ``oauth``: secrets whose
``secret-type`` label, or ``type`` in the rotation config file, falls in that group; ``SecretType.group``)
or else a secret id. ``all`` is every secret with a known type (TLS certificates included: they are listed
and skipped) plus every secret of the rotation config file. Order: groups sorted by id, then the secrets
named, each once.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.rotation.config import RotationConfig
from agent.secrets.interface import SecretInfo, SecretsBackend
from agent.secrets.types import SELECTORS, SecretType


def effective_type(info: SecretInfo, config: RotationConfig | None) -> SecretType | None:
    """The label's type, else the config file's ``type`` for that secret."""
    if info.secret_type is not None:
        return info.secret_type
    return config.types.get(info.secret_id) if config is not None else None


def managed(info: SecretInfo, config: RotationConfig | None) -> bool:
    """A secret rotation knows about: typed, or in the rotation config file."""
    return effective_type(info, config) is not None or (
        config is not None and info.secret_id in config.secrets
    )


def in_group(info: SecretInfo, group: str, config: RotationConfig | None) -> bool:
    if group == "all":
        return managed(info, config)
    secret_type = effective_type(info, config)
    return secret_type is not None and secret_type.group == group


async def select_secrets(
    backend: SecretsBackend, words: Sequence[str], config: RotationConfig | None
) -> list[str]:
    """The secret ids ``words`` select (see the module docstring)."""
    groups = [w for w in words if w in SELECTORS]
    named = [w for w in words if w not in SELECTORS]
    chosen: list[str] = []
    if groups:
        for info in await backend.list_secrets():
            if any(in_group(info, group, config) for group in groups):
                chosen.append(info.secret_id)
    for secret_id in named:
        if secret_id not in chosen:
            chosen.append(secret_id)
    return chosen
