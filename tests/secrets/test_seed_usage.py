"""The seed's usage of the Python API works as written (``agent.secrets`` for ``packages.config.secrets``).

::

    sm = SecretManager()                      # project from the environment / ADC
    value = await sm.get_secret("db-password")
    await sm.create_secret("api-key", "value", secret_type=SecretType.API_KEY)
    await sm.create_secret("db-password", "s3cr3t", secret_type=SecretType.DATABASE)
    new_version = await sm.rotate_secret("api-key")

    local = LocalSecretManager()              # reads ./.env
    value = await local.get_secret("API_KEY")

    value = await get_secret("db-password")  # module level, default manager
    await rotate_secret("api-key")

Everything runs against the real emulator through the official client; the environment, the current
directory and Application Default Credentials are real too (set with monkeypatch, ADC from a real
service-account key file), so nothing of Google's is mocked.

API keys are minted by their issuer, so the rotation tooling assumes no provider for them (README,
"Rotation providers"): ``rotate_secret("api-key")`` of an untouched API key says what to configure, and
rotates once a provider is configured; symmetric types rotate with no configuration at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import secretmanager_v1

from agent.errors import ConfigError
from agent.secrets import (
    LocalSecretManager,
    SecretManager,
    SecretNotFound,
    SecretsError,
    SecretType,
    default_manager,
    get_secret,
    rotate_secret,
)
from agent_emulator.server import EmulatorEndpoints
from testing.logs import logged_text
from testing.postgres_server import PostgresServer, PostgresUnavailable, start_postgres

PROJECT = "seed-project"
CANARY = "canary-5e3d-seed-usage-value"
"""A value that must never appear in an error message or a log line."""

PROJECT_VARIABLES = (
    "SECRETS_AGENT_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
)
"""Where the project comes from, first one set wins (then Application Default Credentials)."""
ENDPOINT_VARIABLES = ("SECRETS_AGENT_GCP_ENDPOINT", "SECRET_MANAGER_EMULATOR_HOST")
EVERY_VARIABLE = (
    *PROJECT_VARIABLES,
    *ENDPOINT_VARIABLES,
    "SECRETS_AGENT_EVENTS_TOPIC",
    "SECRETS_AGENT_DOTENV_FILE",
    "SECRETS_AGENT_SOURCE",
    "SECRETS_AGENT_ENV",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """None of the variables the managers read, and no Application Default Credentials: empty HOME, no
    credentials file, the metadata server's address a closed local port. The current directory is an
    empty temporary one."""
    for name in EVERY_VARIABLE:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CLOUDSDK_CONFIG",
        "KUBERNETES_SERVICE_HOST",
        "GCE_METADATA_HOST",
        "GCE_METADATA_ROOT",
        "K_SERVICE",
        "CLOUD_RUN_JOB",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return monkeypatch


@pytest.fixture
def on_emulator(env: pytest.MonkeyPatch, emulator: EmulatorEndpoints) -> pytest.MonkeyPatch:
    """The environment the seed assumes: the emulator's address and a project, as a developer sets them."""
    env.setenv("SECRET_MANAGER_EMULATOR_HOST", emulator.grpc_target)
    env.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    return env


def write(path: str | Path, text: str) -> Path:
    """A file written (relative paths: in the current directory), outside the async tests' event loop."""
    written = Path(path)
    written.write_text(text)
    return written


def seed(
    client: secretmanager_v1.SecretManagerServiceClient, project: str, secret_id: str, value: str
) -> None:
    """A secret made with the official client (not through the API under test)."""
    automatic = secretmanager_v1.Replication(automatic=secretmanager_v1.Replication.Automatic())
    created = client.create_secret(
        parent=f"projects/{project}",
        secret_id=secret_id,
        secret=secretmanager_v1.Secret(replication=automatic),
    )
    client.add_secret_version(
        parent=created.name, payload=secretmanager_v1.SecretPayload(data=value.encode())
    )


def stored(client: secretmanager_v1.SecretManagerServiceClient, project: str, secret_id: str) -> bytes:
    name = f"projects/{project}/secrets/{secret_id}/versions/latest"
    return bytes(client.access_secret_version(name=name).payload.data)


# --- the snippet, line by line ---------------------------------------------------------------------------


async def test_the_seed_snippet_runs_as_written(
    on_emulator: pytest.MonkeyPatch, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    write(".env", "API_KEY=from-the-dotenv-file\n")

    sm = SecretManager()  # project from the environment / ADC
    await sm.create_secret("api-key", "value", secret_type=SecretType.API_KEY)
    await sm.create_secret("db-password", "s3cr3t", secret_type=SecretType.DATABASE)
    value = await sm.get_secret("db-password")
    assert value == "s3cr3t"
    await sm.create_secret("session-key", "initial", secret_type=SecretType.SESSION_SECRET)
    new_version = await sm.rotate_secret("session-key")
    assert new_version == "2"
    await sm.close()

    local = LocalSecretManager()  # reads ./.env
    value = await local.get_secret("API_KEY")
    assert value == "from-the-dotenv-file"

    value = await get_secret("db-password")  # module level, default manager
    assert value == "s3cr3t"
    assert await rotate_secret("session-key") == "3"

    # What the service holds, read with the official client: the project and endpoint came from the env.
    assert stored(client, PROJECT, "db-password") == b"s3cr3t"
    assert stored(client, PROJECT, "api-key") == b"value"
    labels = client.get_secret(name=f"projects/{PROJECT}/secrets/db-password").labels
    assert labels["secret-type"] == "database"


async def test_an_api_key_rotates_once_a_provider_is_configured(
    on_emulator: pytest.MonkeyPatch, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    """The seed's ``rotate_secret("api-key")``: an API key has no default provider (its issuer mints it),
    so the error says what to configure; with the provider it names, the same call rotates."""
    async with SecretManager() as sm:
        await sm.create_secret("api-key", "value", secret_type=SecretType.API_KEY)
        with pytest.raises(SecretsError) as raised:
            await sm.rotate_secret("api-key")
    message = str(raised.value)
    assert raised.value.code == "FAILED_PRECONDITION"
    assert "provider: password" in message
    assert "provider: command" in message
    assert 'SecretManager(rotation_config="rotation.yaml")' in message
    write("rotation.yaml", "secrets:\n  api-key: {provider: password}\n")

    async with SecretManager(rotation_config="rotation.yaml") as sm:
        assert await sm.rotate_secret("api-key") == "2"
    assert (
        await rotate_secret("api-key", rotation_config={"secrets": {"api-key": {"provider": "password"}}})
        == "3"
    )
    assert stored(client, PROJECT, "api-key") not in (b"value", b"")


# --- the project ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", PROJECT_VARIABLES)
async def test_the_project_comes_from_each_variable(
    env: pytest.MonkeyPatch,
    emulator: EmulatorEndpoints,
    client: secretmanager_v1.SecretManagerServiceClient,
    variable: str,
) -> None:
    env.setenv("SECRET_MANAGER_EMULATOR_HOST", emulator.grpc_target)
    env.setenv(variable, "project-from-env")
    sm = SecretManager()
    assert sm.project == "project-from-env"
    try:
        await sm.create_secret("db-password", CANARY, secret_type=SecretType.DATABASE)
    finally:
        await sm.close()
    assert stored(client, "project-from-env", "db-password") == CANARY.encode()


def test_the_first_project_variable_set_wins(env: pytest.MonkeyPatch) -> None:
    names = PROJECT_VARIABLES
    for index, name in enumerate(names):
        env.setenv(name, f"project-{index}")
    for index, name in enumerate(names):
        assert SecretManager(endpoint="127.0.0.1:1").project == f"project-{index}"
        env.delenv(name)
    # A blank variable counts as unset; an explicit project beats every variable.
    env.setenv("SECRETS_AGENT_PROJECT", " ")
    env.setenv("GCLOUD_PROJECT", "legacy-project")
    assert SecretManager(endpoint="127.0.0.1:1").project == "legacy-project"
    assert SecretManager("explicit-project", endpoint="127.0.0.1:1").project == "explicit-project"


def service_account_key(path: Path, project: str) -> Path:
    """A real service-account key file (a fresh RSA key) naming ``project``, as `gcloud iam service-accounts
    keys create` writes one. Loading it needs no network."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": "0123456789abcdef",
                "private_key": pem,
                "client_email": f"app@{project}.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


async def test_without_a_variable_the_project_is_the_one_adc_reports(
    env: pytest.MonkeyPatch,
    emulator: EmulatorEndpoints,
    client: secretmanager_v1.SecretManagerServiceClient,
    tmp_path: Path,
) -> None:
    env.setenv("SECRET_MANAGER_EMULATOR_HOST", emulator.grpc_target)
    key = tmp_path / "key.json"
    # Constructing reads no credentials: the file is not even there yet.
    env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    sm = SecretManager()
    assert sm.project is None
    service_account_key(key, "adc-project")
    try:
        await sm.create_secret("api-key", CANARY, secret_type=SecretType.API_KEY)
        assert sm.project == "adc-project"
        assert sm.secret_name("api-key") == "projects/adc-project/secrets/api-key"
    finally:
        await sm.close()
    assert stored(client, "adc-project", "api-key") == CANARY.encode()


@pytest.mark.parametrize("with_emulator", [True, False], ids=["emulator", "google"])
async def test_no_project_anywhere_is_one_clear_line(
    env: pytest.MonkeyPatch, emulator: EmulatorEndpoints, with_emulator: bool
) -> None:
    if with_emulator:
        env.setenv("SECRET_MANAGER_EMULATOR_HOST", emulator.grpc_target)
    sm = SecretManager()  # constructing never fails for want of a project
    with pytest.raises(SecretsError) as raised:
        await sm.get_secret("db-password")
    await sm.close()
    message = str(raised.value)
    assert "\n" not in message
    assert "no Google Cloud project" in message
    assert "SecretManager(project=...)" in message
    assert "set SECRETS_AGENT_PROJECT (or GOOGLE_CLOUD_PROJECT)" in message
    assert "gcloud config set project" in message
    if not with_emulator:
        # Google without credentials: both problems, and the way out it names (the emulator) works.
        assert raised.value.code == "UNAUTHENTICATED"
        assert "no Google credentials found" in message
        assert "SECRET_MANAGER_EMULATOR_HOST" in message
    else:
        assert raised.value.code == "FAILED_PRECONDITION"
    with pytest.raises(SecretsError, match="not known until the first call"):
        sm.secret_name("db-password")


async def test_the_no_credentials_hint_is_true(
    env: pytest.MonkeyPatch, emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    """Without credentials the message says to set SECRET_MANAGER_EMULATOR_HOST; doing so is enough, also
    with the project given positionally (which used to ignore the variable)."""
    seed(client, PROJECT, "db-password", "s3cr3t")
    async with SecretManager(PROJECT) as sm:
        with pytest.raises(SecretsError, match="set SECRET_MANAGER_EMULATOR_HOST") as raised:
            await sm.get_secret("db-password")
        assert raised.value.code == "UNAUTHENTICATED"
    env.setenv("SECRET_MANAGER_EMULATOR_HOST", emulator.grpc_target)
    async with SecretManager(PROJECT) as sm:
        assert sm.endpoint == emulator.grpc_target
        assert await sm.get_secret("db-password") == "s3cr3t"


# --- the endpoint ----------------------------------------------------------------------------------------


async def test_endpoint_precedence(
    env: pytest.MonkeyPatch, emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    seed(client, PROJECT, "db-password", "s3cr3t")
    closed = "127.0.0.1:1"
    env.setenv("SECRET_MANAGER_EMULATOR_HOST", closed)
    env.setenv("SECRETS_AGENT_GCP_ENDPOINT", emulator.grpc_target)
    async with SecretManager(PROJECT) as sm:  # the agent's own variable wins over the conventional one
        assert sm.endpoint == emulator.grpc_target
        assert await sm.get_secret("db-password") == "s3cr3t"
    env.setenv("SECRETS_AGENT_GCP_ENDPOINT", closed)
    async with SecretManager(PROJECT, endpoint=emulator.grpc_target) as sm:  # and an argument over both
        assert await sm.get_secret("db-password") == "s3cr3t"


@pytest.mark.parametrize("variable", ENDPOINT_VARIABLES)
@pytest.mark.parametrize("value", ["localhost", "http://127.0.0.1:8780", "127.0.0.1:99999"])
def test_a_malformed_endpoint_variable_is_named(env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    env.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}: expected HOST:PORT") as raised:
        SecretManager(PROJECT)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        default_manager()


# --- LocalSecretManager() ---------------------------------------------------------------------------------


async def test_local_manager_reads_dotenv_in_the_current_directory(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(".env", "API_KEY=abc123\n")
    local = LocalSecretManager()
    assert local.path == tmp_path / "work" / ".env"
    # The directory is the one current when the manager was made, whatever happens to the process later.
    env.chdir(tmp_path)
    assert await local.get_secret("API_KEY") == "abc123"
    await local.create_secret("db-password", "s3cr3t", secret_type=SecretType.DATABASE)
    assert "db-password=" in (tmp_path / "work" / ".env").read_text()
    assert not (tmp_path / ".env").exists()


async def test_local_manager_honours_the_dotenv_variable(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path / "dev.env", "API_KEY=from-dev\n")
    write(".env", "API_KEY=from-dot-env\n")
    env.setenv("SECRETS_AGENT_DOTENV_FILE", "../dev.env")
    assert await LocalSecretManager().get_secret("API_KEY") == "from-dev"
    assert await LocalSecretManager(".env").get_secret("API_KEY") == "from-dot-env"  # an argument wins
    # The module-level functions pick the same file in development.
    env.setenv("SECRETS_AGENT_ENV", "development")
    assert await get_secret("API_KEY") == "from-dev"


# --- database rotation without a provider ------------------------------------------------------------------


@pytest.fixture(params=["gcp", "dotenv"])
def manager_kind(request: pytest.FixtureRequest, on_emulator: pytest.MonkeyPatch) -> str:
    return str(request.param)


def make_manager(kind: str, rotation_config: object | None = None) -> SecretManager | LocalSecretManager:
    if kind == "gcp":
        return SecretManager(rotation_config=rotation_config)
    return LocalSecretManager(rotation_config=rotation_config)


async def test_database_rotation_without_a_provider_says_what_to_configure(
    manager_kind: str, logs: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(manager_kind)
    name = type(manager).__name__
    try:
        await manager.create_secret("db-password", CANARY, secret_type=SecretType.DATABASE)
        with pytest.raises(SecretsError) as raised:
            await manager.rotate_secret("db-password")
        assert await manager.get_secret("db-password") == CANARY  # nothing changed
        assert [v.version for v in await manager.list_versions("db-password")] == ["1"]
    finally:
        await manager.close()
    message = str(raised.value)
    assert raised.value.code == "FAILED_PRECONDITION"
    assert raised.value.secret_id == "db-password"
    assert "\n" not in message
    # The rotation config file, the postgres provider's entry, and how the manager is pointed at the file.
    assert "rotation config file" in message
    assert "secrets: {db-password: {provider: postgres, role: ROLE, admin_dsn_env: ADMIN_DSN}}" in message
    assert f'{name}(rotation_config="rotation.yaml")' in message
    assert 'rotate_secret("db-password", rotation_config="rotation.yaml")' in message
    assert "secrets-agent rotate db-password --config rotation.yaml" in message
    assert CANARY not in message
    assert CANARY not in logged_text(logs)


async def test_a_config_without_the_entry_is_named_in_the_message(manager_kind: str) -> None:
    write("rotation.yaml", "secrets:\n  other: {provider: password}\n")
    manager = make_manager(manager_kind, rotation_config="rotation.yaml")
    try:
        await manager.create_secret("db-password", CANARY, secret_type=SecretType.DATABASE)
        with pytest.raises(SecretsError) as raised:
            await manager.rotate_secret("db-password")
    finally:
        await manager.close()
    message = str(raised.value)
    assert f"add it to {Path.cwd() / 'rotation.yaml'}" in message
    assert "provider: postgres" in message
    assert CANARY not in message


async def test_an_invalid_rotation_config_is_reported_by_path(on_emulator: pytest.MonkeyPatch) -> None:
    write("rotation.yaml", "secrets:\n  db-password: {provider: postgres, rol: app}\nextra: 1\n")
    async with SecretManager(rotation_config="rotation.yaml") as sm:
        await sm.create_secret("db-password", CANARY, secret_type=SecretType.DATABASE)
        with pytest.raises(SecretsError) as raised:
            await sm.rotate_secret("db-password")
        assert raised.value.code == "INVALID_ARGUMENT"
        assert "rotation.yaml: extra: unknown key" in str(raised.value)
    async with SecretManager() as sm:
        with pytest.raises(SecretNotFound, match=r"^secret 'no-such-secret': NOT_FOUND"):
            await sm.rotate_secret("no-such-secret")
    with pytest.raises(TypeError, match="rotation_config must be"):
        await rotate_secret("db-password", rotation_config=42)


# --- database rotation with the provider the message names -------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except PostgresUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.postgres
async def test_the_configuration_the_message_names_rotates_a_database_password(
    on_emulator: pytest.MonkeyPatch, postgres: PostgresServer
) -> None:
    role, password = "seed_app", "initial-Passw0rd-seed"
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute("SET log_statement = 'none'")
        await admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()
    try:
        on_emulator.setenv("ADMIN_DSN", postgres.admin_dsn)
        write(
            "rotation.yaml",
            f"secrets:\n  db-password: {{provider: postgres, role: {role}, admin_dsn_env: ADMIN_DSN}}\n",
        )
        async with SecretManager(rotation_config="rotation.yaml") as sm:
            await sm.create_secret("db-password", password, secret_type=SecretType.DATABASE)
            assert await sm.rotate_secret("db-password") == "2"
            new_password = await sm.get_secret("db-password")
        assert new_password != password
        login = await asyncpg.connect(postgres.dsn(role, new_password))
        try:
            assert await login.fetchval("SELECT current_user") == role
        finally:
            await login.close()
    finally:
        admin = await asyncpg.connect(postgres.admin_dsn)
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


# --- default_manager() ------------------------------------------------------------------------------------


def test_default_manager_is_the_no_argument_manager(on_emulator: pytest.MonkeyPatch, tmp_path: Path) -> None:
    on_emulator.setenv("SECRETS_AGENT_EVENTS_TOPIC", f"projects/{PROJECT}/topics/t")
    chosen = default_manager()
    plain = SecretManager()
    assert isinstance(chosen, SecretManager)
    assert (chosen.project, chosen.endpoint, chosen.topics) == (plain.project, plain.endpoint, plain.topics)
    on_emulator.setenv("SECRETS_AGENT_ENV", "development")
    local = default_manager()
    assert isinstance(local, LocalSecretManager)
    assert local.path == LocalSecretManager().path == tmp_path / "work" / ".env"
