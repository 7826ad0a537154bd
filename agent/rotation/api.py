"""The rotation tooling's entry point for the secrets API: ``SecretManager.rotate_secret`` and
``LocalSecretManager.rotate_secret`` (and ``agent.secrets.rotate_secret``) end here, found through the
``secrets_agent.rotation`` entry point (see ``agent.secrets.rotating``).

A manager's ``rotation_config`` arrives as the caller gave it: a ``RotationConfig``, the path of a rotation
config file (read now, with the strict reading ``rotate --config`` uses), or the file's content as a
mapping. Before the engine runs, the secret is checked for a provider: a database, an API key, an OAuth
token or an untyped secret with nothing configured gets one ``FAILED_PRECONDITION`` line saying what to
write, where, and how to hand it to the manager, in the Python API's terms (the engine's own message speaks
to the command line). It names the secret, its type and settings, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ConfigError
from agent.rotation.config import RotationConfig, load_rotation_config, parse_rotation_config
from agent.rotation.engine import rotate_one
from agent.rotation.providers import registry
from agent.rotation.providers.base import ProviderConfigError
from agent.rotation.results import RotationOptions
from agent.secrets.audit import audit_event
from agent.secrets.interface import SecretsBackend, SecretsError
from agent.secrets.types import SecretType

EXAMPLE_FILE = "rotation.yaml"
"""The file name the messages use in their examples."""


async def rotate_with_provider(backend: SecretsBackend, secret_id: str, config: object | None) -> str:
    """Rotate ``secret_id`` on ``backend`` with its provider.

    Args:
        backend: The manager whose ``rotate_secret`` was called.
        secret_id: The secret to rotate.
        config: The manager's ``rotation_config``: None, a ``RotationConfig``, a file path or a mapping.

    Returns:
        The new version number.

    Raises:
        SecretNotFound: There is no such secret.
        SecretsError: ``FAILED_PRECONDITION`` when no provider is configured (saying what to configure),
            ``INVALID_ARGUMENT`` for an invalid rotation config, ``ABORTED`` when the rotation failed, was
            rolled back or was not done.
        TypeError: ``config`` is none of the accepted kinds.
    """
    rotation_config = as_rotation_config(config)
    await _require_provider(backend, secret_id, rotation_config)
    result = await rotate_one(backend, secret_id, RotationOptions(config=rotation_config))
    if result.result != "rotated":
        raise SecretsError(
            f"secret {secret_id!r}: rotation {result.result}: {result.message}",
            code="ABORTED",
            secret_id=secret_id,
        )
    return str(result.new_version)


def as_rotation_config(config: object | None) -> RotationConfig | None:
    """A manager's ``rotation_config`` as a ``RotationConfig``: a path is read, a mapping is checked.

    Raises:
        SecretsError: ``INVALID_ARGUMENT``: the file cannot be read or either is invalid (every problem,
            each with its path, on one line).
        TypeError: ``config`` is none of the accepted kinds.
    """
    if config is None or isinstance(config, RotationConfig):
        return config
    try:
        if isinstance(config, str | os.PathLike):
            return load_rotation_config(Path(config))
        if isinstance(config, Mapping):
            return parse_rotation_config(config, "rotation_config")
    except ConfigError as error:
        problems = "; ".join(str(problem) for problem in error.problems)
        raise SecretsError(f"invalid rotation config: {problems}", code="INVALID_ARGUMENT") from None
    raise TypeError(
        "rotation_config must be a rotation config file's path, its content as a mapping or a "
        f"RotationConfig, got {type(config).__name__}"
    )


async def _require_provider(backend: SecretsBackend, secret_id: str, config: RotationConfig | None) -> None:
    """SecretsError saying what to configure when nothing gives ``secret_id`` a provider.

    The same order as ``agent.rotation.choice.choose_provider``: the config's entry, the labels, the
    type's default. Secrets the engine skips (TLS) or whose labels are wrong are left to the engine, which
    reports them in its own words.
    """
    info = await backend.get_secret_info(secret_id)  # SecretNotFound: the clearest answer there is
    secret_type = info.secret_type or (config.types.get(secret_id) if config is not None else None)
    if secret_type is not None and not secret_type.rotated_by_us:
        return
    if config is not None and secret_id in config.secrets:
        return
    try:
        if registry.settings_from_labels(info.labels, secret_type) is not None:
            return
    except ProviderConfigError:
        return
    if registry.default_settings_for(secret_type) is not None:
        return
    audit_event(
        "rotate",
        secret_id,
        None,
        "failed",
        caller=backend.caller,
        backend=str(getattr(backend, "backend", type(backend).__name__)),
    )
    raise SecretsError(
        missing_provider_message(secret_id, secret_type, config, type(backend).__name__),
        code="FAILED_PRECONDITION",
        secret_id=secret_id,
    )


def missing_provider_message(
    secret_id: str, secret_type: SecretType | None, config: RotationConfig | None, manager: str
) -> str:
    """What to configure so that ``secret_id`` can be rotated, on one line (names only, never a value).

    Args:
        secret_id: The secret.
        secret_type: Its type (from its label or the config), or None.
        config: The rotation config the manager was given, if any.
        manager: ``SecretManager`` or ``LocalSecretManager``, for the example call.
    """
    if secret_type is SecretType.DATABASE:
        what = (
            "no rotation provider is configured for this database secret: a database password rotates "
            "with the postgres provider, set in a rotation config file as "
            f"`secrets: {{{secret_id}: {{provider: postgres, role: ROLE, admin_dsn_env: ADMIN_DSN}}}}` "
            "(ROLE: the PostgreSQL role whose password it is; ADMIN_DSN: the name of an environment "
            "variable holding the postgresql:// URL of a role allowed to ALTER ROLE it, never the URL "
            "itself; `format: url` when the secret holds a whole URL)"
        )
    elif secret_type is not None:
        what = (
            f"no rotation provider is configured for this {secret_type.value} secret (API keys and OAuth "
            "tokens are minted by their issuer, so none is assumed): set one in a rotation config file, "
            f"`secrets: {{{secret_id}: {{provider: command, generate: [...], validate: [...]}}}}` to have "
            f"the issuer mint it, or `{{{secret_id}: {{provider: password}}}}` for a random value you issue "
            "yourself (or label the secret rotation-provider=password)"
        )
    else:
        what = (
            "no rotation provider for a secret without a secret-type label: name its type in a rotation "
            f"config file, `secrets: {{{secret_id}: {{type: encryption-key}}}}` (that type's default "
            f"provider), or a provider, `{{{secret_id}: {{provider: password}}}}` (or label the secret "
            "secret-type=... or rotation-provider=...)"
        )
    if config is not None:
        where = f"add it to {config.source or 'the RotationConfig'} ({manager}'s rotation_config)"
    else:
        where = (
            f'then pass the file: {manager}(rotation_config="{EXAMPLE_FILE}"), or '
            f'rotate_secret("{secret_id}", rotation_config="{EXAMPLE_FILE}") at module level; '
            f"`secrets-agent rotate {secret_id} --config {EXAMPLE_FILE}` reads the same file"
        )
    return f"secret {secret_id!r}: FAILED_PRECONDITION: {what}; {where}"
