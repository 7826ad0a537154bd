"""DATABASE rotation end to end: a real PostgreSQL (the session's private cluster), the emulator, the
engine."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from agent.observe.logs import REDACTED
from agent.rotation.config import parse_rotation_config
from agent.rotation.engine import rotate_one
from agent.rotation.results import RotationOptions
from agent.rotation.selection import select_secrets
from agent.secrets.interface import SecretsBackend
from agent.secrets.types import SecretType
from testing.logs import logged_text
from testing.postgres_server import PostgresServer
from tests.rotation.conftest import PgRole

pytestmark = pytest.mark.postgres

ADMIN_ENV = "ROTATION_TEST_ADMIN_DSN"


@pytest.fixture
def admin_env(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, postgres.admin_dsn)


async def can_log_in(server: PostgresServer, role: str, password: str) -> bool:
    try:
        conn = await asyncpg.connect(server.dsn(role, password), timeout=10)
    except asyncpg.InvalidPasswordError:
        return False
    try:
        return bool(await conn.fetchval("SELECT current_user = $1", role))
    finally:
        await conn.close()


def options(role: PgRole, **extra: Any) -> RotationOptions:
    settings = {"provider": "postgres", "role": role.name, "admin_dsn_env": ADMIN_ENV, **extra}
    return RotationOptions(config=parse_rotation_config({"secrets": {"db-password": settings}}))


async def test_the_rotated_password_works_and_the_old_one_no_longer_does(
    sm: SecretsBackend, pg_role: PgRole, admin_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await sm.create_secret("db-password", pg_role.password, SecretType.DATABASE)
    assert await select_secrets(sm, ["database"], None) == ["db-password"]

    result = await rotate_one(sm, "db-password", options(pg_role))

    assert (result.result, result.old_version, result.new_version) == ("rotated", "1", "2"), result.message
    new_password = await sm.get_secret("db-password")
    assert new_password != pg_role.password
    assert await can_log_in(pg_role.server, pg_role.name, new_password)  # a new connection, new password
    assert not await can_log_in(pg_role.server, pg_role.name, pg_role.password)
    text = logged_text(caplog.records)
    assert new_password not in text
    assert pg_role.password not in text
    assert REDACTED not in text
    assert new_password not in pg_role.server.log_text()  # only a SCRAM verifier reached the server


async def test_failing_validation_rolls_the_database_and_the_secret_back(
    sm: SecretsBackend, pg_role: PgRole, admin_env: None
) -> None:
    await sm.create_secret("db-password", pg_role.password, SecretType.DATABASE)
    # Validation logs in to a database that does not exist: apply (ALTER ROLE) works, validate fails.
    broken = options(pg_role, dsn=f"postgresql://{pg_role.name}@127.0.0.1:{pg_role.server.port}/no_such_db")

    result = await rotate_one(sm, "db-password", broken)

    assert result.result == "rolled-back", result.message
    assert "validate" in result.message
    assert (result.new_version, result.restored_version) == ("2", "3")
    assert await can_log_in(pg_role.server, pg_role.name, pg_role.password)  # the role has its old password
    assert await sm.get_secret("db-password") == pg_role.password  # latest serves it again
    assert {v.version: v.state for v in await sm.list_versions("db-password")} == {
        "1": "ENABLED",
        "2": "DISABLED",
        "3": "ENABLED",
    }
