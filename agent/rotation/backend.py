"""What ``rotate`` and ``rotation status`` work on: Secret Manager, or a ``.env`` file with ``--dotenv``.

Secret Manager: ``--project`` (else the rotation config's ``project``, else ``SECRETS_AGENT_PROJECT`` or
``GOOGLE_CLOUD_PROJECT``); ``--endpoint HOST:PORT`` (else ``SECRETS_AGENT_GCP_ENDPOINT``, else
``SECRET_MANAGER_EMULATOR_HOST``, as the agent) talks plaintext gRPC to the emulator; otherwise Application
Default Credentials. Never a silent fallback to ``.env``: that is only used when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ConfigError, Problem
from agent.rotation.config import RotationConfig
from agent.secrets.environment import endpoint_from, project_from
from agent.secrets.interface import SecretsBackend

_ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}")


def project_of(flag: str | None, config: RotationConfig | None, env: Mapping[str, str]) -> str | None:
    if flag:
        return flag
    if config is not None and config.project:
        return config.project
    return project_from(env)


def endpoint_of(flag: str | None, env: Mapping[str, str]) -> str | None:
    """``HOST:PORT`` of an emulator, or None for Google; ConfigError naming the flag/variable if malformed.
    The variables are read by the Python API's own rule (``agent.secrets.environment``)."""
    if flag:
        if not _ENDPOINT.fullmatch(flag.strip()):
            expected = f"expected HOST:PORT (e.g. 127.0.0.1:8780), got {flag!r}"
            raise ConfigError(Problem("--endpoint", expected))
        return flag.strip()
    return endpoint_from(env)


def make_backend(
    *,
    dotenv: Path | None,
    project: str | None,
    endpoint: str | None,
    config: RotationConfig | None,
) -> SecretsBackend:
    """The backend to rotate; ConfigError when Secret Manager is meant but no project is known."""
    if dotenv is not None:
        from agent.secrets.local import LocalSecretManager

        return LocalSecretManager(dotenv, rotation_config=config)
    if not project:
        raise ConfigError(
            Problem(
                "--project",
                "which project? pass --project, set project in the rotation config, or "
                "SECRETS_AGENT_PROJECT / GOOGLE_CLOUD_PROJECT (or use --dotenv FILE for a local .env)",
            )
        )
    from agent.secrets.manager import SecretManager

    return SecretManager(project, endpoint=endpoint, rotation_config=config)
