"""The default manager: which backend ``agent.secrets.get_secret`` and friends use, chosen from the
environment the way the agent chooses its source (explicitly, never by silent fallback).

===========================================  =====================================================
environment                                  manager
===========================================  =====================================================
``SECRETS_AGENT_SOURCE=dotenv``              ``LocalSecretManager()``: ``SECRETS_AGENT_DOTENV_FILE``
                                             or ``./.env``
``SECRETS_AGENT_SOURCE=gcp``                 ``SecretManager()``
``SECRETS_AGENT_SOURCE`` unset or ``auto``:
  ``SECRETS_AGENT_ENV=development``          ``LocalSecretManager()``
  otherwise (production)                     ``SecretManager()``
===========================================  =====================================================

The managers are built with no arguments, so they take their defaults exactly as ``SecretManager()`` and
``LocalSecretManager()`` do (``agent.secrets.environment``): the project from ``SECRETS_AGENT_PROJECT``,
else ``GOOGLE_CLOUD_PROJECT``, ``GCLOUD_PROJECT``, ``CLOUDSDK_CORE_PROJECT``, else the project of
Application Default Credentials (looked up at the first call; none anywhere: that call raises SecretsError
saying what to set); the endpoint from ``SECRETS_AGENT_GCP_ENDPOINT``, else ``SECRET_MANAGER_EMULATOR_HOST``
(none: Google with Application Default Credentials); the topics of new secrets from
``SECRETS_AGENT_EVENTS_TOPIC`` (the topic Secret Manager publishes to, as in the agent's ``events.topic``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agent.errors import ConfigError, Problem
from agent.secrets.environment import (
    DEFAULT_DOTENV_FILE,
    DOTENV_FILE_ENV,
    EMULATOR_HOST_ENV,
    ENDPOINT_ENV,
    GOOGLE_PROJECT_ENVS,
    PROJECT_ENV,
    TOPIC_ENV,
)
from agent.secrets.interface import SecretsBackend
from agent.secrets.local import LocalSecretManager
from agent.secrets.manager import SecretManager

__all__ = [
    "DEFAULT_DOTENV_FILE",
    "DOTENV_FILE_ENV",
    "ENDPOINT_ENV",
    "ENDPOINT_FALLBACK_ENV",
    "ENVIRONMENT_ENV",
    "PROJECT_ENV",
    "PROJECT_FALLBACK_ENV",
    "SOURCE_ENV",
    "TOPIC_ENV",
    "default_manager",
]

SOURCE_ENV = "SECRETS_AGENT_SOURCE"
ENVIRONMENT_ENV = "SECRETS_AGENT_ENV"
PROJECT_FALLBACK_ENV = GOOGLE_PROJECT_ENVS[0]
"""``GOOGLE_CLOUD_PROJECT`` (the first of Google's variables; ``agent.secrets.environment`` has them all)."""
ENDPOINT_FALLBACK_ENV = EMULATOR_HOST_ENV

_SOURCES = ("auto", "gcp", "dotenv")
_ENVIRONMENTS = ("production", "development")


def default_manager(
    env: Mapping[str, str] | None = None, *, rotation_config: object | None = None
) -> SecretsBackend:
    """The manager the environment selects (see the module docstring).

    Builds no client and opens no file: nothing connects until the first call.

    Args:
        env: The environment to read; None: ``os.environ``. (Application Default Credentials, when the
            project comes from them, always read the process environment.)
        rotation_config: Handed to the manager (see ``SecretManager``): a rotation config file's path,
            its content as a mapping, or a ``RotationConfig``.

    Returns:
        A ``LocalSecretManager`` or a ``SecretManager``; close it after use.

    Raises:
        ConfigError: ``SECRETS_AGENT_SOURCE`` or ``SECRETS_AGENT_ENV`` has a value it does not know, or
            the endpoint variable is not ``HOST:PORT``; one line naming the variable.
    """
    env = os.environ if env is None else env
    source = _choice(env, SOURCE_ENV, _SOURCES, "auto")
    environment = _choice(env, ENVIRONMENT_ENV, _ENVIRONMENTS, "production")
    if source == "dotenv" or (source == "auto" and environment == "development"):
        return LocalSecretManager(rotation_config=rotation_config, environ=env)
    return SecretManager(rotation_config=rotation_config, environ=env)


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "")
    value = raw.strip().lower() or default
    if value not in options:
        raise ConfigError(Problem(name, f"expected one of {', '.join(options)}, got {raw!r}"))
    return value
