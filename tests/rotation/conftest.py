"""Rotation test fixtures: a private PostgreSQL cluster for the session, and a fresh login role per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from tests.postgres_server import PostgresServer, PostgresUnavailable, start_postgres


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
