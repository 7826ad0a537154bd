"""The postgres provider against a real PostgreSQL (the session's private cluster, log_statement = all)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agent.rotation.providers import scram
from agent.rotation.providers.base import (
    ProviderConfigError,
    ProviderError,
    RotationContext,
    ValidationFailed,
)
from agent.rotation.providers.pgurl import PgUrl
from agent.rotation.providers.postgres import PostgresProvider
from agent.rotation.providers.registry import build_provider
from agent.secrets.types import SecretType
from testing.postgres_server import PostgresServer
from tests.rotation.conftest import PgRole

pytestmark = pytest.mark.postgres

ADMIN_ENV = "TEST_PG_ADMIN_DSN"
CANARY = "canary-pg-9Vd3-if-you-read-this-it-leaked"


@pytest.fixture(autouse=True)
def _admin_env(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, postgres.admin_dsn)


@pytest.fixture(autouse=True)
def _no_canary_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert CANARY not in caplog.text


def provider(role: PgRole, **settings: Any) -> PostgresProvider:
    built = build_provider(
        {"provider": "postgres", "role": role.name, "admin_dsn_env": ADMIN_ENV, **settings},
        SecretType.DATABASE,
    )
    assert isinstance(built, PostgresProvider)
    return built


def ctx(old_value: bytes | None, secret_id: str = "orders-db") -> RotationContext:
    return RotationContext(secret_id, SecretType.DATABASE, "3", old_value)


async def can_log_in(server: PostgresServer, user: str, password: str | bytes) -> bool:
    """A NEW connection as ``user``; True when it logs in and is that user."""
    text = password.decode("utf-8") if isinstance(password, bytes) else password
    try:
        conn = await asyncpg.connect(server.dsn(user, text))
    except asyncpg.InvalidPasswordError:
        return False
    try:
        return bool(await conn.fetchval("SELECT current_user") == user)
    finally:
        await conn.close()


async def set_plaintext_password(server: PostgresServer, role: str, password: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute("SET log_statement = 'none'")
        literal = password.replace("'", "''")
        await conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{literal}'")
    finally:
        await conn.close()


async def stored_verifier(server: PostgresServer, role: str) -> str:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        return str(await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role))
    finally:
        await conn.close()


# --- SCRAM verifier -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "plain-ascii-Password-123",
        "p\u00e4ssw\u00f6rd\u00a0with nbsp",  # non-ASCII space maps to a space
        "\ufb01nance\u00ad-ligature-soft-hyphen",  # NFKC "fi", soft hyphen mapped to nothing
        "\u2162-roman-numeral",  # NFKC -> "III"
    ],
)
async def test_verifier_matches_what_the_server_computes(pg_role: PgRole, password: str) -> None:
    """Same salt and iterations as the server's own verifier -> byte-identical (so SASLprep agrees too)."""
    await set_plaintext_password(pg_role.server, pg_role.name, password)
    server_side = await stored_verifier(pg_role.server, pg_role.name)
    iterations, salt, _, _ = scram.parse(server_side)
    assert scram.verifier(password.encode("utf-8"), salt=salt, iterations=iterations) == server_side


def test_verifier_format() -> None:
    text = scram.verifier(b"x" * 20)
    iterations, salt, stored_key, server_key = scram.parse(text)
    assert text.startswith("SCRAM-SHA-256$4096:")
    assert (iterations, len(salt), len(stored_key), len(server_key)) == (4096, 16, 32, 32)
    assert scram.verifier(b"x" * 20) != text  # a fresh random salt each time


# --- format: password -----------------------------------------------------------------------------------


async def test_apply_makes_the_new_password_work_and_the_old_one_fail(pg_role: PgRole) -> None:
    rotate = provider(pg_role)
    context = ctx(pg_role.password.encode())
    new = await rotate.generate(context)
    assert len(new) == 32
    await rotate.apply(context, new)
    await rotate.validate(context, new)
    assert await can_log_in(pg_role.server, pg_role.name, new)
    assert not await can_log_in(pg_role.server, pg_role.name, pg_role.password)
    assert await stored_verifier(pg_role.server, pg_role.name) != ""


async def test_rollback_restores_the_old_password(pg_role: PgRole) -> None:
    rotate = provider(pg_role)
    context = ctx(pg_role.password.encode())
    new = await rotate.generate(context)
    await rotate.apply(context, new)
    await rotate.rollback(context, new)
    assert await can_log_in(pg_role.server, pg_role.name, pg_role.password)
    assert not await can_log_in(pg_role.server, pg_role.name, new)
    await rotate.rollback(context, new)  # twice: still the old one
    assert await can_log_in(pg_role.server, pg_role.name, pg_role.password)


async def test_rollback_without_apply_keeps_the_old_password(pg_role: PgRole) -> None:
    rotate = provider(pg_role)
    context = ctx(pg_role.password.encode())
    new = await rotate.generate(context)
    await rotate.rollback(context, new)
    assert await can_log_in(pg_role.server, pg_role.name, pg_role.password)
    assert not await can_log_in(pg_role.server, pg_role.name, new)


async def test_rollback_to_a_non_ascii_password_that_clients_saslprep(pg_role: PgRole) -> None:
    """The old password came from elsewhere and is not ASCII: restored via our SASLprep'd verifier, and a
    real client (asyncpg, which SASLpreps as libpq does) logs in with it."""
    old = "Gr\u00fc\u00dfe\u00a0" + CANARY
    rotate = provider(pg_role)
    new = await rotate.generate(ctx(old.encode()))
    await rotate.apply(ctx(old.encode()), new)
    await rotate.rollback(ctx(old.encode()), new)
    assert await can_log_in(pg_role.server, pg_role.name, old)


async def test_validate_fails_for_a_wrong_password_naming_role_and_server(pg_role: PgRole) -> None:
    rotate = provider(pg_role)
    with pytest.raises(ValidationFailed) as raised:
        await rotate.validate(ctx(None), CANARY.encode())
    message = str(raised.value)
    assert f"role {pg_role.name!r}" in message
    assert f"127.0.0.1:{pg_role.server.port}/postgres" in message
    assert "password authentication failed" in message
    assert CANARY not in message
    assert pg_role.server.admin_password not in message


async def test_validation_uses_a_new_connection_not_an_existing_session(pg_role: PgRole) -> None:
    """An app session opened before the rotation stays up; validation still proves a fresh login works."""
    session = await asyncpg.connect(pg_role.dsn)
    try:
        rotate = provider(pg_role)
        context = ctx(pg_role.password.encode())
        new = await rotate.generate(context)
        await rotate.apply(context, new)
        before = await session.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", pg_role.name
        )
        await rotate.validate(context, new)
        assert await session.fetchval("SELECT current_user") == pg_role.name  # old session unaffected
        with pytest.raises(ValidationFailed):
            await rotate.validate(context, pg_role.password.encode())  # the old password: a new login fails
        assert before == 1
    finally:
        await session.close()


async def test_server_log_never_sees_a_plaintext_password(pg_role: PgRole) -> None:
    rotate = provider(pg_role)
    old = CANARY + "-old"
    await set_plaintext_password(pg_role.server, pg_role.name, old)
    context = ctx(old.encode())
    new = await rotate.generate(context)
    await rotate.apply(context, new)
    await rotate.validate(context, new)
    await rotate.rollback(context, new)
    log = pg_role.server.log_text()
    assert f'ALTER ROLE "{pg_role.name}" PASSWORD \'SCRAM-SHA-256$4096:' in log  # the statements are logged
    assert new.decode() not in log
    assert old not in log


async def test_validation_dsn_selects_the_database(pg_role: PgRole) -> None:
    server = pg_role.server
    rotate = provider(pg_role, dsn=f"postgresql://127.0.0.1:{server.port}/template1?application_name=check")
    context = ctx(pg_role.password.encode())
    new = await rotate.generate(context)
    await rotate.apply(context, new)
    await rotate.validate(context, new)
    bad = provider(pg_role, dsn=f"postgresql://127.0.0.1:{server.port}/no_such_db")
    with pytest.raises(ValidationFailed, match="the database does not exist"):
        await bad.validate(context, new)


async def test_validation_over_the_unix_socket(pg_role: PgRole) -> None:
    server = pg_role.server
    rotate = provider(pg_role, dsn=f"postgresql:///postgres?host={server.socket_dir}&port={server.port}")
    context = ctx(pg_role.password.encode())
    new = await rotate.generate(context)
    await rotate.apply(context, new)
    await rotate.validate(context, new)


# --- format: url ----------------------------------------------------------------------------------------


async def test_url_format_changes_only_the_password(pg_role: PgRole) -> None:
    server = pg_role.server
    old_url = (
        f"postgresql://{pg_role.name}:{pg_role.password}@127.0.0.1:{server.port}/template1"
        "?application_name=orders&connect_timeout=5"
    )
    rotate = provider(pg_role, format="url")
    context = ctx(old_url.encode())
    new_url = (await rotate.generate(context)).decode()
    old, new = PgUrl.parse(old_url), PgUrl.parse(new_url)
    assert (new.user, new.hosts, new.database, new.query) == (old.user, old.hosts, old.database, old.query)
    assert new.password is not None
    assert new.password != old.password
    assert new_url == old_url.replace(pg_role.password, new.password.decode())

    await rotate.apply(context, new_url.encode())
    await rotate.validate(context, new_url.encode())
    # The app's own view: the URL itself works (asyncpg takes no libpq-only connect_timeout).
    conn = await asyncpg.connect(new.for_asyncpg())
    assert await conn.fetchval("SELECT current_database()") == "template1"
    assert await conn.fetchval("SHOW application_name") == "orders"
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(old.for_asyncpg())

    await rotate.rollback(context, new_url.encode())
    conn = await asyncpg.connect(old.for_asyncpg())
    await conn.close()
    with pytest.raises(ValidationFailed):
        await rotate.validate(context, new_url.encode())


async def test_url_format_without_a_current_value_builds_on_dsn(pg_role: PgRole) -> None:
    server = pg_role.server
    rotate = provider(pg_role, format="url", dsn=f"postgresql://127.0.0.1:{server.port}/postgres")
    new_url = await rotate.generate(ctx(None))
    assert PgUrl.parse(new_url.decode()).user == pg_role.name
    await rotate.apply(ctx(None), new_url)
    await rotate.validate(ctx(None), new_url)
    with pytest.raises(ProviderError, match=r"needs the current value .* or the .dsn. setting"):
        await provider(pg_role, format="url").generate(ctx(None))


async def test_url_format_refuses_a_url_for_another_user(pg_role: PgRole) -> None:
    url = f"postgresql://someone_else:{CANARY}@127.0.0.1:{pg_role.server.port}/postgres"
    with pytest.raises(ProviderError) as raised:
        await provider(pg_role, format="url").generate(ctx(url.encode()))
    assert "logs in as 'someone_else'" in str(raised.value)
    assert CANARY not in str(raised.value)
    with pytest.raises(ProviderError, match="the current value is not a postgresql:// URL"):
        await provider(pg_role, format="url").generate(ctx(CANARY.encode()))


# --- admin connection and errors ------------------------------------------------------------------------


async def test_admin_dsn_from_a_file(pg_role: PgRole, tmp_path: Path) -> None:
    path = tmp_path / "admin-dsn"
    path.write_text(pg_role.server.admin_dsn + "\n")
    rotate = build_provider(
        {"provider": "postgres", "role": pg_role.name, "admin_dsn_file": str(path)}, SecretType.DATABASE
    )
    context = ctx(pg_role.password.encode())
    new = await rotate.generate(context)
    await rotate.apply(context, new)
    assert await can_log_in(pg_role.server, pg_role.name, new)


async def test_a_createrole_admin_is_enough(pg_role: PgRole, monkeypatch: pytest.MonkeyPatch) -> None:
    server = pg_role.server
    admin_name, admin_password = f"rotator_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    conn = await asyncpg.connect(server.admin_dsn)
    await conn.execute("SET log_statement = 'none'")
    await conn.execute(f"CREATE ROLE {admin_name} LOGIN CREATEROLE PASSWORD '{admin_password}'")
    await conn.close()
    try:
        monkeypatch.setenv(ADMIN_ENV, server.dsn(admin_name, admin_password))
        rotate = provider(pg_role)
        context = ctx(pg_role.password.encode())
        new = await rotate.generate(context)
        await rotate.apply(context, new)
        await rotate.validate(context, new)
    finally:
        conn = await asyncpg.connect(server.admin_dsn)
        await conn.execute(f"DROP ROLE {admin_name}")
        await conn.close()


async def test_missing_admin_env_names_the_setting(pg_role: PgRole, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_ENV)
    with pytest.raises(
        ProviderConfigError, match=f"setting 'admin_dsn_env': environment variable {ADMIN_ENV} is not"
    ):
        await provider(pg_role).apply(ctx(None), b"x" * 32)


async def test_admin_errors_name_the_server_never_the_password(
    pg_role: PgRole, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = pg_role.server
    rotate = provider(pg_role)
    new = await rotate.generate(ctx(None))

    monkeypatch.setenv(ADMIN_ENV, server.dsn(server.admin_user, CANARY))
    with pytest.raises(ProviderError) as raised:
        await rotate.apply(ctx(None), new)
    assert str(raised.value) == (
        f"secret 'orders-db': apply: cannot connect to 127.0.0.1:{server.port}/postgres as the admin user "
        f"{server.admin_user!r}: password authentication failed"
    )
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__

    monkeypatch.setenv(ADMIN_ENV, f"postgresql://{server.admin_user}:{CANARY}@127.0.0.1:1/postgres")
    with pytest.raises(ProviderError) as raised:
        await rotate.rollback(ctx(b"old-" + CANARY.encode()), new)
    assert "rollback: cannot connect to 127.0.0.1:1/postgres" in str(raised.value)
    assert CANARY not in str(raised.value)

    monkeypatch.setenv(ADMIN_ENV, f"mysql://root:{CANARY}@db/x")
    with pytest.raises(ProviderConfigError) as raised_config:
        await rotate.apply(ctx(None), new)
    assert "the admin DSN is not a postgresql:// URL" in str(raised_config.value)
    assert CANARY not in str(raised_config.value)


async def test_unknown_role(postgres: PostgresServer) -> None:
    rotate = build_provider(
        {"provider": "postgres", "role": "no_such_role", "admin_dsn_env": ADMIN_ENV}, SecretType.DATABASE
    )
    with pytest.raises(ProviderError) as raised:
        await rotate.apply(ctx(None), CANARY.encode())
    assert str(raised.value) == (
        f"secret 'orders-db': apply: could not set the password of role 'no_such_role' on "
        f"127.0.0.1:{postgres.port}/postgres: the role does not exist"
    )


async def test_role_names_are_quoted(postgres: PostgresServer) -> None:
    """A role name with capitals, a space and a quote is altered exactly, not another role."""
    name = 'Odd "Role" name'
    password = secrets.token_urlsafe(12)
    conn = await asyncpg.connect(postgres.admin_dsn)
    await conn.execute("SET log_statement = 'none'")
    await conn.execute(f'CREATE ROLE "Odd ""Role"" name" LOGIN PASSWORD \'{password}\'')
    await conn.close()
    try:
        rotate = build_provider(
            {"provider": "postgres", "role": name, "admin_dsn_env": ADMIN_ENV}, SecretType.DATABASE
        )
        new = await rotate.generate(ctx(password.encode()))
        await rotate.apply(ctx(password.encode()), new)
        await rotate.validate(ctx(password.encode()), new)
    finally:
        conn = await asyncpg.connect(postgres.admin_dsn)
        await conn.execute('DROP ROLE "Odd ""Role"" name"')
        await conn.close()
