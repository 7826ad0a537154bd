"""The default manager: which backend ``agent.secrets.get_secret`` and friends use, chosen from the
environment the way the agent chooses its source (explicitly, never by silent fallback).

===========================================  =====================================================
environment                                  manager
===========================================  =====================================================
``SECRETS_AGENT_SOURCE=dotenv``              ``LocalSecretManager(SECRETS_AGENT_DOTENV_FILE or .env)``
``SECRETS_AGENT_SOURCE=gcp``                 ``SecretManager`` (a project is required)
``SECRETS_AGENT_SOURCE`` unset or ``auto``:
  ``SECRETS_AGENT_ENV=development``          ``LocalSecretManager(...)``
  otherwise (production)                     ``SecretManager``; without a project: ConfigError
===========================================  =====================================================

``SecretManager`` takes its project from ``SECRETS_AGENT_PROJECT``, else ``GOOGLE_CLOUD_PROJECT``; its
endpoint from ``SECRETS_AGENT_GCP_ENDPOINT``, else ``SECRET_MANAGER_EMULATOR_HOST`` (none: Google with
Application Default Credentials); the topics of new secrets from ``SECRETS_AGENT_EVENTS_TOPIC`` (the topic
Secret Manager publishes to, as in the agent's ``events.topic``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ConfigError, Problem
from agent.secrets.interface import SecretsBackend
from agent.secrets.local import LocalSecretManager
from agent.secrets.manager import SecretManager

SOURCE_ENV = "SECRETS_AGENT_SOURCE"
ENVIRONMENT_ENV = "SECRETS_AGENT_ENV"
DOTENV_FILE_ENV = "SECRETS_AGENT_DOTENV_FILE"
PROJECT_ENV = "SECRETS_AGENT_PROJECT"
PROJECT_FALLBACK_ENV = "GOOGLE_CLOUD_PROJECT"
ENDPOINT_ENV = "SECRETS_AGENT_GCP_ENDPOINT"
ENDPOINT_FALLBACK_ENV = "SECRET_MANAGER_EMULATOR_HOST"
TOPIC_ENV = "SECRETS_AGENT_EVENTS_TOPIC"
DEFAULT_DOTENV_FILE = Path(".env")

_SOURCES = ("auto", "gcp", "dotenv")
_ENVIRONMENTS = ("production", "development")


def default_manager(env: Mapping[str, str] | None = None) -> SecretsBackend:
    """The manager the environment selects (see the module docstring). Builds no client: nothing
    connects until the first call. Raises ConfigError (one line saying what to set) when it cannot."""
    env = os.environ if env is None else env
    source = _choice(env, SOURCE_ENV, _SOURCES, "auto")
    environment = _choice(env, ENVIRONMENT_ENV, _ENVIRONMENTS, "production")
    if source == "dotenv" or (source == "auto" and environment == "development"):
        return LocalSecretManager(Path(env.get(DOTENV_FILE_ENV) or DEFAULT_DOTENV_FILE))
    project = env.get(PROJECT_ENV) or env.get(PROJECT_FALLBACK_ENV)
    if not project:
        raise ConfigError(
            Problem(
                PROJECT_ENV,
                f"no Google Cloud project for the secrets API: set {PROJECT_ENV} (or "
                f"{PROJECT_FALLBACK_ENV}); for local development set {ENVIRONMENT_ENV}=development",
            )
        )
    endpoint = env.get(ENDPOINT_ENV) or env.get(ENDPOINT_FALLBACK_ENV) or None
    topic = env.get(TOPIC_ENV)
    return SecretManager(project, endpoint=endpoint, topics=(topic,) if topic else ())


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "")
    value = raw.strip().lower() or default
    if value not in options:
        raise ConfigError(Problem(name, f"expected one of {', '.join(options)}, got {raw!r}"))
    return value
