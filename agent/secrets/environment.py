"""Where the managers' defaults come from when the caller does not pass them: the environment.

The variables are the agent's own (``secrets-agent`` reads the same ones for the same settings), then
Google's, so an app, the agent beside it and ``gcloud`` agree on the project and the emulator:

======================  ===========================================================================
setting                 variables, first one set wins
======================  ===========================================================================
project                 ``SECRETS_AGENT_PROJECT``, ``GOOGLE_CLOUD_PROJECT``, ``GCLOUD_PROJECT``,
                        ``CLOUDSDK_CORE_PROJECT``; then the project Application Default Credentials
                        report (``google.auth.default()``), looked up at the first call
endpoint                ``SECRETS_AGENT_GCP_ENDPOINT``, ``SECRET_MANAGER_EMULATOR_HOST`` (``HOST:PORT``
                        of the emulator: plaintext gRPC, no credentials); none: Google with ADC
quota project           ``SECRETS_AGENT_GCP_QUOTA_PROJECT``, ``GOOGLE_CLOUD_QUOTA_PROJECT``; none: each
                        call counts against the project of its secret
topics of new secrets   ``SECRETS_AGENT_EVENTS_TOPIC`` (one ``projects/P/topics/T``)
``.env`` file           ``SECRETS_AGENT_DOTENV_FILE``, else ``.env``; relative to the current directory
                        when the manager is made
======================  ===========================================================================

``GOOGLE_CLOUD_PROJECT`` and ``GCLOUD_PROJECT`` are the two google-auth itself reads, in that order;
``CLOUDSDK_CORE_PROJECT`` is gcloud's ``core/project``, which ADC would otherwise only find by running
``gcloud`` (and never with the emulator, where no credentials are loaded).

Everything here is a lookup in a mapping: no file is read and nothing connects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from agent.config import optional_project
from agent.errors import ConfigError, Problem

PROJECT_ENV: Final = "SECRETS_AGENT_PROJECT"
"""The agent's own project variable (its setting ``project``)."""
GOOGLE_PROJECT_ENVS: Final = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
"""Google's project variables: google-auth's two, in its order, then gcloud's."""
PROJECT_ENVS: Final = (PROJECT_ENV, *GOOGLE_PROJECT_ENVS)
"""Every variable a project is taken from, first one set wins."""
ENDPOINT_ENV: Final = "SECRETS_AGENT_GCP_ENDPOINT"
"""The agent's own endpoint variable (its setting ``gcp.endpoint``)."""
EMULATOR_HOST_ENV: Final = "SECRET_MANAGER_EMULATOR_HOST"
"""The conventional emulator variable, used when the agent's is not set."""
ENDPOINT_ENVS: Final = (ENDPOINT_ENV, EMULATOR_HOST_ENV)
QUOTA_PROJECT_ENVS: Final = ("SECRETS_AGENT_GCP_QUOTA_PROJECT", "GOOGLE_CLOUD_QUOTA_PROJECT")
"""Where ``quota_project`` comes from when it is not passed, first one set wins: the agent's variable for
``gcp.quota_project``, then the one google-auth reads."""
TOPIC_ENV: Final = "SECRETS_AGENT_EVENTS_TOPIC"
"""The topic Secret Manager notifies for new secrets (the agent's ``events.topic``)."""
DOTENV_FILE_ENV: Final = "SECRETS_AGENT_DOTENV_FILE"
"""The ``.env`` file (the agent's ``dotenv.file``)."""
DEFAULT_DOTENV_FILE: Final = Path(".env")

_ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")

NO_PROJECT: Final = (
    "no Google Cloud project for Secret Manager: pass SecretManager(project=...), set "
    f"{PROJECT_ENV} (or GOOGLE_CLOUD_PROJECT), or give Application Default Credentials a project "
    "(`gcloud config set project PROJECT`, or a service-account key with project_id in "
    "GOOGLE_APPLICATION_CREDENTIALS); for a local .env file instead use LocalSecretManager(), or set "
    "SECRETS_AGENT_ENV=development for the module-level functions"
)
"""The one line said when no project is found anywhere (never a value: there is none in it)."""


def project_from(env: Mapping[str, str]) -> str | None:
    """The project the environment names (``PROJECT_ENVS``, first non-blank wins), or None.

    Args:
        env: The environment to read (``os.environ`` or a stand-in).

    Returns:
        The project id or number, stripped; None when no variable is set.
    """
    for name in PROJECT_ENVS:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def endpoint_from(env: Mapping[str, str]) -> str | None:
    """The emulator's ``HOST:PORT`` the environment names (``ENDPOINT_ENVS``, first non-blank wins).

    Args:
        env: The environment to read.

    Returns:
        ``HOST:PORT`` (stripped), or None for Google itself.

    Raises:
        ConfigError: The variable is set but is not ``HOST:PORT``; the message names the variable.
    """
    for name in ENDPOINT_ENVS:
        value = env.get(name, "").strip()
        if not value:
            continue
        match = _ENDPOINT.fullmatch(value)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ConfigError(
                Problem(name, f"expected HOST:PORT of the emulator (e.g. 127.0.0.1:8780), got {value!r}")
            )
        return value
    return None


def quota_project_from(env: Mapping[str, str]) -> str | None:
    """The quota project the environment names (``QUOTA_PROJECT_ENVS``, first non-blank wins), or None.

    Args:
        env: The environment to read.

    Returns:
        The project id or number, stripped; None when no variable is set.

    Raises:
        ConfigError: The variable is set but is not a project; the message names the variable.
    """
    for name in QUOTA_PROJECT_ENVS:
        value = env.get(name, "").strip()
        if not value:
            continue
        try:
            return optional_project(value)
        except ValueError as error:
            raise ConfigError(Problem(name, str(error))) from None
    return None


def topics_from(env: Mapping[str, str]) -> tuple[str, ...]:
    """The notification topics of new secrets: ``SECRETS_AGENT_EVENTS_TOPIC`` when set, else none.

    Args:
        env: The environment to read.

    Returns:
        A tuple of zero or one ``projects/P/topics/T`` names.
    """
    topic = env.get(TOPIC_ENV, "").strip()
    return (topic,) if topic else ()


def dotenv_file_from(env: Mapping[str, str]) -> Path:
    """The ``.env`` file: ``SECRETS_AGENT_DOTENV_FILE``, else ``.env``, made absolute against the current
    directory now.

    Args:
        env: The environment to read.

    Returns:
        An absolute path (the file need not exist).
    """
    return Path(env.get(DOTENV_FILE_ENV, "").strip() or DEFAULT_DOTENV_FILE).absolute()
