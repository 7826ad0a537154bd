"""default_manager() follows the agent's explicit rule; the module-level functions use it; importing the
package starts nothing; a real process logs audit events and never the value."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.cloud import secretmanager_v1

from agent.errors import ConfigError
from agent.secrets import (
    LocalSecretManager,
    SecretManager,
    SecretsError,
    default_manager,
    get_secret,
    get_secret_bytes,
)
from agent.secrets import default as default_module
from agent.secrets import environment as environment_module
from agent_emulator.server import EmulatorEndpoints

CANARY = "canary-0d7a-module-level-value"
OUR_VARIABLES = (
    default_module.SOURCE_ENV,
    default_module.ENVIRONMENT_ENV,
    default_module.DOTENV_FILE_ENV,
    *environment_module.PROJECT_ENVS,
    default_module.ENDPOINT_ENV,
    default_module.ENDPOINT_FALLBACK_ENV,
    default_module.TOPIC_ENV,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SECRETS_AGENT_ENV": "development"}, ("local", ".env")),
        (
            {"SECRETS_AGENT_ENV": "Development", "SECRETS_AGENT_DOTENV_FILE": "dev/app.env"},
            ("local", "dev/app.env"),
        ),
        ({"SECRETS_AGENT_SOURCE": "dotenv"}, ("local", ".env")),
        # An explicit dotenv source wins even with a project configured.
        ({"SECRETS_AGENT_SOURCE": "dotenv", "SECRETS_AGENT_PROJECT": "p"}, ("local", ".env")),
        # And an explicit gcp source wins in development.
        (
            {"SECRETS_AGENT_SOURCE": "gcp", "SECRETS_AGENT_ENV": "development", "GOOGLE_CLOUD_PROJECT": "p"},
            ("gcp", "p", None, ()),
        ),
        ({"SECRETS_AGENT_PROJECT": "p"}, ("gcp", "p", None, ())),
        ({"GOOGLE_CLOUD_PROJECT": "g"}, ("gcp", "g", None, ())),
        ({"SECRETS_AGENT_PROJECT": "p", "GOOGLE_CLOUD_PROJECT": "g"}, ("gcp", "p", None, ())),
        (
            {"SECRETS_AGENT_PROJECT": "p", "SECRET_MANAGER_EMULATOR_HOST": "127.0.0.1:1"},
            ("gcp", "p", "127.0.0.1:1", ()),
        ),
        (
            {
                "SECRETS_AGENT_PROJECT": "p",
                "SECRETS_AGENT_GCP_ENDPOINT": "127.0.0.1:2",
                "SECRET_MANAGER_EMULATOR_HOST": "127.0.0.1:1",
                "SECRETS_AGENT_EVENTS_TOPIC": "projects/p/topics/t",
            },
            ("gcp", "p", "127.0.0.1:2", ("projects/p/topics/t",)),
        ),
        (
            {"SECRETS_AGENT_SOURCE": "auto", "SECRETS_AGENT_ENV": "production", "SECRETS_AGENT_PROJECT": "p"},
            ("gcp", "p", None, ()),
        ),
    ],
)
def test_selection(env: dict[str, str], expected: tuple[object, ...]) -> None:
    manager = default_manager(env)
    if isinstance(manager, LocalSecretManager):
        # Relative names are taken against the current directory when the manager is made.
        assert ("local", str(manager.path.relative_to(Path.cwd()))) == expected
    else:
        assert isinstance(manager, SecretManager)
        assert ("gcp", manager.project, manager.endpoint, manager.topics) == expected


@pytest.fixture
def no_adc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Application Default Credentials either: empty HOME, no hints, metadata server unreachable."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CLOUDSDK_CONFIG",
        "GCE_METADATA_HOST",
        "GCE_METADATA_ROOT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")


@pytest.mark.parametrize(
    "env",
    [
        {},
        # A .env file is configured, but this is production: no silent fallback to it.
        {"SECRETS_AGENT_DOTENV_FILE": ".env"},
        {"SECRETS_AGENT_SOURCE": "gcp", "SECRETS_AGENT_ENV": "development"},
    ],
)
async def test_production_without_a_project_is_a_clear_error(env: dict[str, str], no_adc: None) -> None:
    """Secret Manager, never the .env; the project may still come from ADC, so the first call says what to
    set, on one line."""
    manager = default_manager(env)
    assert isinstance(manager, SecretManager)
    assert manager.project is None
    with pytest.raises(SecretsError) as excinfo:
        await manager.get_secret("db")
    await manager.close()
    message = str(excinfo.value)
    assert "\n" not in message
    assert "set SECRETS_AGENT_PROJECT (or GOOGLE_CLOUD_PROJECT)" in message
    assert "SECRETS_AGENT_ENV=development" in message


@pytest.mark.parametrize(
    ("name", "value"), [("SECRETS_AGENT_SOURCE", "vault"), ("SECRETS_AGENT_ENV", "staging")]
)
def test_unknown_choices_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: expected one of .*, got '{value}'$"):
        default_manager({name: value, "SECRETS_AGENT_PROJECT": "p"})


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_module_level_functions_read_the_env_file_in_development(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("API_TOKEN='t0ken'\n")
    clean_env.setenv("SECRETS_AGENT_ENV", "development")
    clean_env.setenv("SECRETS_AGENT_DOTENV_FILE", str(env_file))
    assert await get_secret("API_TOKEN") == "t0ken"
    assert await get_secret_bytes("API_TOKEN", "1") == b"t0ken"


async def test_module_level_functions_read_secret_manager_in_production(
    clean_env: pytest.MonkeyPatch,
    emulator: EmulatorEndpoints,
    client: secretmanager_v1.SecretManagerServiceClient,
) -> None:
    created = client.create_secret(
        parent="projects/prod", secret_id="db", secret={"replication": {"automatic": {}}}
    )
    client.add_secret_version(parent=created.name, payload={"data": b"from-the-service"})
    clean_env.setenv("GOOGLE_CLOUD_PROJECT", "prod")
    clean_env.setenv("SECRET_MANAGER_EMULATOR_HOST", emulator.grpc_target)
    assert await get_secret("db") == "from-the-service"


def run_python(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in OUR_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
        check=False,
    )


def test_importing_the_package_starts_nothing() -> None:
    done = run_python(
        """
        import asyncio, sys, threading
        import agent.secrets
        from agent.secrets import get_secret, rotate_secret, SecretManager, LocalSecretManager
        assert threading.active_count() == 1, threading.enumerate()
        assert "agent.rotation.engine" not in sys.modules
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            print("no loop")
        """,
        {},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no loop\n"


def test_a_real_process_logs_audit_events_and_never_the_value(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    """JSON logs as the agent writes them (stderr), at DEBUG: the audit lines are there, the value is not,
    not even in the error of a failed read of a disabled version."""
    created = client.create_secret(
        parent="projects/prod", secret_id="db", secret={"replication": {"automatic": {}}}
    )
    client.add_secret_version(parent=created.name, payload={"data": CANARY.encode()})
    done = run_python(
        f"""
        import asyncio, sys
        from agent.observe.logs import configure_logging
        from agent.secrets import default_manager, VersionNotEnabled, SecretType
        configure_logging("debug", "json")

        async def main():
            m = default_manager()
            try:
                value = await m.get_secret("db")
                await m.create_secret("api", {CANARY + "-2"!r}, SecretType.API_KEY)
                await m.disable_version("db", "1")
                try:
                    await m.get_secret("db")
                except VersionNotEnabled as e:
                    print(e, file=sys.stderr)
            finally:
                await m.close()
            print(len(value))

        asyncio.run(main())
        """,
        {"GOOGLE_CLOUD_PROJECT": "prod", "SECRET_MANAGER_EMULATOR_HOST": emulator.grpc_target},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{len(CANARY)}\n"
    assert CANARY not in done.stderr
    audit = [
        line for line in map(json.loads, done.stderr.splitlines()[:-1]) if line["logger"] == "agent.audit"
    ]
    assert [(a["operation"], a["secret"], a["version"], a["result"]) for a in audit] == [
        ("access", "db", "1", "ok"),
        ("create", "api", "1", "ok"),
        ("disable", "db", "1", "ok"),
        ("access", "db", "latest", "FAILED_PRECONDITION"),
    ]
    assert all(re.fullmatch(r"[^@\s]+@\S+ pid \d+", a["caller"]) for a in audit), audit
    assert all(a["severity"] == "INFO" for a in audit)
    assert "FAILED_PRECONDITION" in done.stderr.splitlines()[-1]
