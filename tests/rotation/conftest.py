"""Rotation test fixtures: a SecretManager on the emulator, a directory for provider programs, a private
PostgreSQL cluster for the session, and a fresh login role per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from agent.secrets.interface import SecretsBackend
from agent_emulator.server import EmulatorEndpoints
from testing.postgres_server import PostgresServer, PostgresUnavailable, start_postgres
from tests.rotation.helpers_engine import Programs, manager


@pytest.fixture
async def sm(emulator: EmulatorEndpoints) -> AsyncIterator[SecretsBackend]:
    """A SecretManager on the test's emulator (with a notification topic, so rotation policies are kept)."""
    m = manager(emulator)
    yield m
    await m.close()


@pytest.fixture
def programs(tmp_path: Path) -> Programs:
    """Where a test writes the small programs its command providers run."""
    directory = tmp_path / "programs"
    directory.mkdir()
    return Programs(directory)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on 127.0.0.1 (scram-sha-256, log_statement=all), shared by the session.

    Its own initdb + pg_ctl in a temp dir, stopped and removed at the end; it never uses the Debian cluster.
    Fails (never skips) when the server binaries are missing, saying to run `.ci/run` or
    `apt-get install postgresql`. Mark tests that use it ``@pytest.mark.postgres``.
    """
    try:
        server = start_postgres()
    except PostgresUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class PgRole:
    """A login role created for one test; ``password`` is its current password."""

    name: str
    password: str = field(repr=False)
    server: PostgresServer

    @property
    def dsn(self) -> str:
        """A TCP URL that logs in as this role with ``password``."""
        return self.server.dsn(self.name, self.password)


@pytest.fixture
async def pg_role(postgres: PostgresServer) -> AsyncIterator[PgRole]:
    """A fresh LOGIN role (random name and password) on the session's cluster, dropped afterwards."""
    name = f"app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        # Keep the fixture's own plaintext out of the statement log, which tests search for passwords.
        await admin.execute("SET log_statement = 'none'")
        # DDL takes no bind parameters; the name is ours and the password url-safe, so plain literals do.
        await admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()
    yield PgRole(name, password, postgres)
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await admin.close()
