"""What ``rotate`` and ``rotation status`` work on: Secret Manager, or a ``.env`` file with ``--dotenv``.

Secret Manager: ``--project`` (else the rotation config's ``project``, else ``SECRETS_AGENT_PROJECT`` or
``GOOGLE_CLOUD_PROJECT``); ``--endpoint HOST:PORT`` (else ``SECRETS_AGENT_GCP_ENDPOINT``, else
``SECRET_MANAGER_EMULATOR_HOST``, as the agent) talks plaintext gRPC to the emulator; otherwise Google.
Never a silent fallback to ``.env``: that is only used when asked for.

Who the rotator is: the rotation config's ``gcp`` section (the agent's identity settings, read by the agent's
loader), handed to ``SecretManager`` under the same names: ``credentials_file`` (else Application Default
Credentials), ``impersonate_service_account`` with ``delegates`` and ``iam_endpoint``, ``quota_project``
(else ``SECRETS_AGENT_GCP_QUOTA_PROJECT`` / ``GOOGLE_CLOUD_QUOTA_PROJECT``). With an identity there, the
emulator endpoint gets the credentials too, as the agent's would: only on a loopback address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from agent.config import GcpConfig, is_loopback, split_listen
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
    """The backend to rotate, as the rotation config's ``gcp`` identity (if any); ConfigError when Secret
    Manager is meant but no project is known, or when that identity's tokens would go in plaintext to an
    endpoint that is not on a loopback address."""
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
    gcp = config.gcp if config is not None else GcpConfig()
    if endpoint is not None and gcp.explicit_identity():
        try:
            host, _ = split_listen(endpoint)
        except ValueError:
            host = endpoint
        if not is_loopback(host):
            raise ConfigError(
                Problem(
                    "--endpoint",
                    f"{host} is not a loopback address, and rotate would send it the access tokens of the "
                    "rotation config's gcp identity in plaintext: use an emulator on a loopback address, or "
                    "leave the identity out of the rotation config",
                )
            )
    from agent.secrets.manager import SecretManager

    return SecretManager(
        project,
        endpoint=endpoint,
        rotation_config=config,
        credentials_file=gcp.credentials_file,
        impersonate_service_account=gcp.impersonate_service_account,
        delegates=gcp.delegates,
        iam_endpoint=gcp.iam_endpoint,
        quota_project=gcp.quota_project,
    )
