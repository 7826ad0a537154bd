"""``postgres``: rotate a PostgreSQL role's password (asyncpg).

* **generate**: a password from the ``password`` provider's policy (``length``, ``symbols``). With
  ``format: url`` the secret value is a whole ``postgresql://`` URL: the new one is the current value (or
  the ``dsn`` setting) with only the password replaced.
* **apply**: ``ALTER ROLE "<role>" PASSWORD 'SCRAM-SHA-256$4096:...'`` over the admin connection. The
  verifier is computed here (``scram.verifier``, as psql's ``\\password`` does), so the plaintext never
  reaches the server, its statement log or ``pg_stat_statements``.
* **validate**: a NEW connection as the role with the new password; ``SELECT current_user`` must be the role.
* **rollback**: the role's password set back to the old value's password (safe to repeat, and a no-op in
  effect when apply never ran, since the password is already the old one).

The admin DSN (a user with CREATEROLE, or the role itself, or a superuser) never sits in a config file: it
is read from the environment variable named by ``admin_dsn_env`` (or a file, ``admin_dsn_file``) when it is
needed. Errors name the role and the server (``host:port/db``), never a password, and never quote asyncpg's
exception text (which can echo a DSN). Existing sessions of the role are not affected by ALTER ROLE: they
stay logged in until they reconnect.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final, Literal

from agent.observe.logs import fields
from agent.rotation.providers.base import (
    ProviderConfigError,
    ProviderError,
    ProviderSettings,
    RotationContext,
    ValidationFailed,
)
from agent.rotation.providers.password import PasswordPolicy, read_policy
from agent.rotation.providers.pgurl import InvalidUrl, PgUrl
from agent.rotation.providers.scram import verifier
from agent.rotation.providers.settings import SettingsReader

log = logging.getLogger(__name__)

Format = Literal["password", "url"]
FORMATS: Final = ("password", "url")
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
MAX_IDENTIFIER_BYTES: Final = 63
"""PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated, which could alter another role."""


class PostgresProvider:
    """Rotates the password of ``role``; see the module docstring for each step."""

    name = "postgres"

    def __init__(
        self,
        role: str,
        *,
        admin_dsn_env: str | None = None,
        admin_dsn_file: str | None = None,
        dsn: str | None = None,
        format: Format = "password",
        policy: PasswordPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if (admin_dsn_env is None) == (admin_dsn_file is None):
            raise ValueError("exactly one of admin_dsn_env and admin_dsn_file")
        self.role = role
        self.admin_dsn_env = admin_dsn_env
        self.admin_dsn_file = admin_dsn_file
        self.dsn = PgUrl.parse(dsn) if dsn is not None else None
        self.format: Format = format
        self.policy = policy or PasswordPolicy()
        self.connect_timeout = connect_timeout

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> PostgresProvider:
        """Settings: ``role`` (required); ``admin_dsn_env`` or ``admin_dsn_file`` (one of them); ``dsn``
        (validation target, no password; default: the admin DSN's server and database); ``format``
        (password | url); ``length``, ``symbols`` (as ``password``); ``connect_timeout`` (s, default 10)."""
        reader = SettingsReader(cls.name, settings)
        role = reader.string("role", required=True)
        if role is not None and (len(role.encode("utf-8")) > MAX_IDENTIFIER_BYTES or "\0" in role):
            reader.problem("role", f"must be a role name of at most {MAX_IDENTIFIER_BYTES} bytes")
        admin_env = reader.string("admin_dsn_env")
        admin_file = reader.string("admin_dsn_file")
        if (admin_env is None) == (admin_file is None):
            reader.problem(
                "admin_dsn_env",
                "or 'admin_dsn_file' (exactly one) must name where the admin connection URL is: the name of "
                "an environment variable (recommended) or a file",
            )
        dsn = reader.string("dsn")
        if dsn is not None:
            problem = _validation_dsn_problem(dsn, role)
            if problem is not None:
                reader.problem("dsn", problem)
                dsn = None
        fmt = reader.choice("format", FORMATS, default="password")
        policy = read_policy(reader)
        timeout = reader.number("connect_timeout", default=DEFAULT_CONNECT_TIMEOUT, minimum=0, maximum=300)
        reader.finish()
        _require_asyncpg()
        assert role is not None
        return cls(
            role,
            admin_dsn_env=admin_env,
            admin_dsn_file=admin_file,
            dsn=dsn,
            format=fmt,  # type: ignore[arg-type]  # choice() checked it
            policy=policy,
            connect_timeout=timeout,
        )

    def __repr__(self) -> str:
        source = f"env {self.admin_dsn_env}" if self.admin_dsn_env else f"file {self.admin_dsn_file}"
        return f"PostgresProvider(role={self.role!r}, admin from {source}, format={self.format!r})"

    # --- the four steps ---------------------------------------------------------------------------------

    async def generate(self, ctx: RotationContext) -> bytes:
        password = self.policy.generate().encode("ascii")
        if self.format == "password":
            return password
        template = self._url_template(ctx)
        if template.user is not None and template.user != self.role:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: its URL logs in as {template.user!r}, not the role "
                f"{self.role!r}; fix the 'role' setting or the secret"
            )
        return str(template.with_credentials(self.role, password)).encode("utf-8")

    async def apply(self, ctx: RotationContext, new_value: bytes) -> None:
        password = self._password_of(new_value, ctx, "new")
        await self._set_password(password, ctx, step="apply")

    async def validate(self, ctx: RotationContext, new_value: bytes) -> None:
        url = self._validation_url(new_value, ctx)
        where = url.describe()
        asyncpg = _require_asyncpg()
        try:
            conn = await asyncpg.connect(url.for_asyncpg(), timeout=self.connect_timeout)
        except Exception as e:  # every failure to log in fails validation; the reason is ours, not e's text
            raise ValidationFailed(
                f"secret {ctx.secret_id!r}: role {self.role!r} could not log in to {where} with the new "
                f"password: {_failure_reason(e)}"
            ) from None
        try:
            user = await conn.fetchval("SELECT current_user", timeout=self.connect_timeout)
        except Exception as e:
            raise ValidationFailed(
                f"secret {ctx.secret_id!r}: SELECT current_user as role {self.role!r} on {where} failed: "
                f"{_failure_reason(e)}"
            ) from None
        finally:
            await _close(conn)
        if user != self.role:
            raise ValidationFailed(
                f"secret {ctx.secret_id!r}: the new credentials log in to {where} as {user!r}, "
                f"not {self.role!r}"
            )

    async def rollback(self, ctx: RotationContext, new_value: bytes) -> None:
        if ctx.old_value is None:
            log.warning(
                "no previous value to restore: the role keeps the new password (in the disabled version)",
                extra=fields(secret=ctx.secret_id, role=self.role),
            )
            return
        password = self._password_of(ctx.old_value, ctx, "current")
        await self._set_password(password, ctx, step="rollback")

    # --- helpers ----------------------------------------------------------------------------------------

    async def _set_password(self, password: bytes, ctx: RotationContext, *, step: str) -> None:
        if b"\0" in password:
            raise ProviderError(f"secret {ctx.secret_id!r}: {step}: the password holds a NUL byte")
        admin = self._admin_url()
        where = admin.describe()
        statement = f"ALTER ROLE {quote_ident(self.role)} PASSWORD '{verifier(password)}'"
        asyncpg = _require_asyncpg()
        try:
            conn = await asyncpg.connect(admin.for_asyncpg(), timeout=self.connect_timeout)
        except Exception as e:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: {step}: cannot connect to {where} as the admin user "
                f"{admin.user or '(default)'!r}: {_failure_reason(e)}"
            ) from None
        try:
            await conn.execute(statement, timeout=self.connect_timeout)
        except Exception as e:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: {step}: could not set the password of role {self.role!r} on "
                f"{where}: {_failure_reason(e, altering=True)}"
            ) from None
        finally:
            await _close(conn)
        log.info(
            "role password set",
            extra=fields(secret=ctx.secret_id, role=self.role, server=where, step=step),
        )

    def _admin_url(self) -> PgUrl:
        """The admin connection URL, read now from its environment variable or file."""
        if self.admin_dsn_env is not None:
            setting, text = "admin_dsn_env", os.environ.get(self.admin_dsn_env, "").strip()
            if not text:
                raise ProviderConfigError(
                    f"rotation provider 'postgres': setting {setting!r}: environment variable "
                    f"{self.admin_dsn_env} is not set (it must hold the admin postgresql:// URL)"
                )
        else:
            assert self.admin_dsn_file is not None
            setting = "admin_dsn_file"
            try:
                text = Path(self.admin_dsn_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise ProviderConfigError(
                    f"rotation provider 'postgres': setting {setting!r}: cannot read {self.admin_dsn_file}: "
                    f"{reason}"
                ) from None
        try:
            return PgUrl.parse(text)
        except InvalidUrl as e:
            raise ProviderConfigError(
                f"rotation provider 'postgres': setting {setting!r}: the admin DSN {e}"
            ) from None

    def _url_template(self, ctx: RotationContext) -> PgUrl:
        """What a ``format: url`` value is built on: the current value, else the ``dsn`` setting."""
        if ctx.old_value is not None:
            return self._parse_value(ctx.old_value, ctx, "current")
        if self.dsn is not None:
            return self.dsn
        raise ProviderError(
            f"secret {ctx.secret_id!r}: format 'url' needs the current value (a postgresql:// URL) or the "
            "'dsn' setting to build the new URL from"
        )

    def _parse_value(self, value: bytes, ctx: RotationContext, which: str) -> PgUrl:
        try:
            return PgUrl.parse(value.decode("utf-8"))
        except (UnicodeDecodeError, InvalidUrl):
            raise ProviderError(
                f"secret {ctx.secret_id!r}: the {which} value is not a postgresql:// URL (format 'url')"
            ) from None

    def _password_of(self, value: bytes, ctx: RotationContext, which: str) -> bytes:
        """The password inside a secret value of this provider's format."""
        if self.format == "password":
            return value
        password = self._parse_value(value, ctx, which).password
        if password is None:
            raise ProviderError(f"secret {ctx.secret_id!r}: the {which} URL holds no password")
        return password

    def _validation_url(self, new_value: bytes, ctx: RotationContext) -> PgUrl:
        """Where validation logs in: the ``dsn`` setting, else the new URL itself (format url), else the
        admin DSN's server and database; always as the role with the new password."""
        password = self._password_of(new_value, ctx, "new")
        if self.dsn is not None:
            return self.dsn.with_credentials(self.role, password)
        if self.format == "url":
            return self._parse_value(new_value, ctx, "new")
        return self._admin_url().with_credentials(self.role, password)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (exact case, any characters)."""
    return '"' + name.replace('"', '""') + '"'


def _validation_dsn_problem(dsn: str, role: str | None) -> str | None:
    try:
        url = PgUrl.parse(dsn)
    except InvalidUrl as e:
        return str(e)
    if url.password is not None:
        return "must not hold a password (validation uses the new one); remove it from the URL"
    if url.user is not None and role is not None and url.user != role:
        return f"logs in as {url.user!r}, not the role {role!r}; leave the user out (it defaults to the role)"
    return None


def _require_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise ProviderConfigError(
            "rotation provider 'postgres' needs asyncpg: pip install 'secrets-agent[postgres]'"
        ) from None
    return asyncpg


def _failure_reason(error: BaseException, *, altering: bool = False) -> str:
    """A short reason for a failed connection (or, ``altering``, ALTER ROLE), built from the error's type and
    SQLSTATE only: asyncpg's messages can quote the DSN (and so the password)."""
    import asyncpg

    if altering and isinstance(error, asyncpg.UndefinedObjectError):
        return "the role does not exist"
    reasons: list[tuple[type[BaseException], str]] = [
        (asyncpg.InvalidPasswordError, "password authentication failed"),
        (
            asyncpg.InvalidAuthorizationSpecificationError,
            "not authorized (pg_hba.conf, or the role cannot log in)",
        ),
        (asyncpg.InvalidCatalogNameError, "the database does not exist"),
        (asyncpg.UndefinedObjectError, "the server does not know a setting given in the URL's query"),
        (
            asyncpg.InsufficientPrivilegeError,
            "permission denied (the admin user needs CREATEROLE or superuser)",
        ),
        (asyncpg.TooManyConnectionsError, "too many connections"),
        (asyncpg.CannotConnectNowError, "the server is starting up or shutting down"),
    ]
    for kind, reason in reasons:
        if isinstance(error, kind):
            return reason
    if isinstance(error, asyncpg.PostgresError):
        return f"{type(error).__name__} (SQLSTATE {error.sqlstate})"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, asyncpg.ClientConfigurationError | ValueError):
        return "the connection URL is not valid"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return type(error).__name__


async def _close(conn: Any) -> None:
    try:
        await conn.close(timeout=5)
    except Exception:  # the work is done; a close that fails leaves nothing to undo
        conn.terminate()
