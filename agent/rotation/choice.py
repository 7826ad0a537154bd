"""Which provider rotates a secret, and with which settings.

In this order: the secret's entry in the rotation config file, else its labels (``rotation-provider`` and
friends, see ``providers.registry.settings_from_labels``), else its type's default
(``providers.registry.default_settings_for``: symmetric keys and passwords have one; API keys, OAuth tokens
and databases need to be told how). Nothing found -> a ``ProviderConfigError`` that says how to configure it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.rotation.config import RotationConfig
from agent.rotation.providers import registry
from agent.rotation.providers.base import Provider, ProviderConfigError, ProviderSettings
from agent.secrets.types import SecretType


@dataclass(frozen=True)
class ProviderChoice:
    """The settings chosen for a secret and where they came from (``config``, ``labels``, ``default``)."""

    settings: ProviderSettings
    source: str

    @property
    def name(self) -> str:
        return str(self.settings.get("provider", "?"))

    def build(self, secret_type: SecretType | None) -> Provider:
        """The provider (ProviderConfigError when its settings are wrong)."""
        return registry.build_provider(self.settings, secret_type)


def choose_provider(
    secret_id: str,
    secret_type: SecretType | None,
    labels: Mapping[str, str],
    config: RotationConfig | None,
) -> ProviderChoice:
    """The settings for ``secret_id``; ProviderConfigError saying how to configure one when none apply."""
    if config is not None and secret_id in config.secrets:
        return ProviderChoice(config.secrets[secret_id], "config")
    from_labels = registry.settings_from_labels(labels, secret_type)
    if from_labels is not None:
        return ProviderChoice(from_labels, "labels")
    if secret_type is not None:
        default = registry.default_settings_for(secret_type)
        if default is not None:
            return ProviderChoice(default, "default")
    kind = (
        f"a secret of type {secret_type.value}"
        if secret_type is not None
        else "a secret without a secret-type label"
    )
    raise ProviderConfigError(
        f"no rotation provider for {secret_id!r} ({kind}): add it to the rotation config file "
        f"(secrets: {{{secret_id}: {_example_entry(secret_type)}}}, --config FILE) "
        "or set the label rotation-provider on the secret"
    )


_COMMAND_ENTRY = "{provider: command, generate: [...], validate: [...]}"


def _example_entry(secret_type: SecretType | None) -> str:
    return _COMMAND_ENTRY if secret_type is None else _EXAMPLE_ENTRY.get(secret_type, _COMMAND_ENTRY)


_EXAMPLE_ENTRY = {
    # A database password is changed in the database too: the postgres provider does both, and validates.
    SecretType.DATABASE: "{provider: postgres, role: ROLE, admin_dsn_env: ADMIN_DSN}",
}
"""The entry the message suggests, by type (the types with a default provider never get here); an issuer's
key (an API key, an OAuth token) is rotated by a command that asks the issuer."""
