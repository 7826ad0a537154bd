"""Which provider a secret rotates with, and building it from its settings.

Settings come from, in order: the secret's entry in the rotation config file, its labels
(``settings_from_labels``), or its type's default (``default_settings_for``). ``build_provider`` turns a
settings mapping into a Provider or raises ProviderConfigError naming the provider and the setting.

Labels (``rotation-provider``, ``rotation-length``, ``rotation-encoding``) can only carry simple settings:
label values are lowercase ``[a-z0-9_-]`` of at most 63 characters, so commands, paths, role names with
capitals and DSNs don't fit. Providers that need those (``postgres``, ``command``, ``manual`` with a file)
are configured in the rotation config file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from agent.rotation.providers.base import Provider, ProviderConfigError, ProviderSettings
from agent.rotation.providers.command import CommandProvider
from agent.rotation.providers.manual import ManualProvider
from agent.rotation.providers.password import PasswordProvider
from agent.rotation.providers.postgres import PostgresProvider
from agent.rotation.providers.settings import PROVIDER_KEY
from agent.rotation.providers.symmetric import SymmetricProvider
from agent.secrets.types import SecretType

PROVIDERS: Final[Mapping[str, Callable[[ProviderSettings], Provider]]] = {
    SymmetricProvider.name: SymmetricProvider.from_settings,
    PasswordProvider.name: PasswordProvider.from_settings,
    PostgresProvider.name: PostgresProvider.from_settings,
    CommandProvider.name: CommandProvider.from_settings,
    ManualProvider.name: ManualProvider.from_settings,
}
"""Provider name -> builder from settings."""

LABEL_PROVIDER: Final = "rotation-provider"
LABEL_LENGTH: Final = "rotation-length"
LABEL_ENCODING: Final = "rotation-encoding"
ROTATION_LABELS: Final = (LABEL_PROVIDER, LABEL_LENGTH, LABEL_ENCODING)

_DEFAULTS: Final[Mapping[SecretType, Mapping[str, Any] | None]] = {
    SecretType.ENCRYPTION_KEY: {PROVIDER_KEY: "symmetric", "length": 32, "encoding": "base64"},
    SecretType.JWT_SECRET: {PROVIDER_KEY: "symmetric", "length": 64, "encoding": "base64url"},
    SecretType.SESSION_SECRET: {PROVIDER_KEY: "symmetric", "length": 32, "encoding": "base64url"},
    # A database needs its connection and role; API keys and OAuth tokens are minted by third parties.
    SecretType.DATABASE: None,
    SecretType.API_KEY: None,
    SecretType.OAUTH_TOKEN: None,
    SecretType.TLS_CERT: None,  # rotated elsewhere (cert-manager), never by us
}


def build_provider(settings: ProviderSettings, secret_type: SecretType | None) -> Provider:
    """The provider ``settings[\"provider\"]`` names, built from the rest of ``settings``.

    ProviderConfigError for an unknown provider, a missing or bad setting (all problems in one message),
    or a type we never rotate (TLS certificates).
    """
    if secret_type is not None and not secret_type.rotated_by_us:
        raise ProviderConfigError(
            f"secrets of type {secret_type.value} are rotated elsewhere (e.g. cert-manager), "
            "not by a rotation provider"
        )
    name = settings.get(PROVIDER_KEY)
    if name is None:
        raise ProviderConfigError(f"setting {PROVIDER_KEY!r} is required: one of {', '.join(PROVIDERS)}")
    builder = PROVIDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise ProviderConfigError(
            f"setting {PROVIDER_KEY!r}: unknown provider {name!r} (known: {', '.join(PROVIDERS)})"
        )
    return builder(settings)


def default_settings_for(secret_type: SecretType | None) -> dict[str, Any] | None:
    """The settings a type rotates with when nothing is configured; ``None`` = it must be configured
    (database, API key, OAuth token) or is never rotated by us (TLS certificate)."""
    if secret_type is None:
        return None
    defaults = _DEFAULTS[secret_type]
    return dict(defaults) if defaults is not None else None


def settings_from_labels(
    labels: Mapping[str, str], secret_type: SecretType | None = None
) -> dict[str, Any] | None:
    """Provider settings from a secret's ``rotation-*`` labels; ``None`` when it has none.

    ``rotation-length`` and ``rotation-encoding`` without ``rotation-provider`` adjust the type's default
    (``secret_type``); without such a default, that is a ProviderConfigError naming the label.
    """
    present = {key: labels[key] for key in ROTATION_LABELS if key in labels}
    if not present:
        return None
    settings: dict[str, Any]
    if LABEL_PROVIDER in present:
        settings = {PROVIDER_KEY: present[LABEL_PROVIDER]}
    else:
        default = default_settings_for(secret_type)
        if default is None:
            kind = (
                f"type {secret_type.value}" if secret_type is not None else "a secret without a secret-type"
            )
            raise ProviderConfigError(
                f"label {LABEL_PROVIDER} is missing: {', '.join(sorted(present))} needs it, as {kind} has no "
                "default provider"
            )
        settings = default
    if LABEL_LENGTH in present:
        text = present[LABEL_LENGTH]
        if not text.isdigit() or not text.isascii():
            raise ProviderConfigError(f"label {LABEL_LENGTH}: must be a whole number (got {text!r})")
        settings["length"] = int(text)
    if LABEL_ENCODING in present:
        settings["encoding"] = present[LABEL_ENCODING]
    return settings
