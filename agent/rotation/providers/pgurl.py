"""``postgresql://`` connection URLs: pull out and swap the credentials, describe the server safely.

Only the URL form is handled (libpq's ``key=value`` strings are not): it is what asyncpg takes and what apps
read from a ``DATABASE_URL``. Parsing is by hand rather than ``urllib.parse`` so that libpq's multi-host form
(``host1:5432,host2:5432``) and socket directories in ``?host=/path`` survive untouched, and so that nothing
here ever puts the credentials into an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes, urlencode

SCHEMES = ("postgresql://", "postgres://")
CREDENTIAL_PARAMS = frozenset({"user", "password", "passfile"})
"""Query parameters that carry credentials; dropped when a URL is re-used for another user."""
LIBPQ_CLIENT_PARAMS = frozenset(
    {
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "hostaddr",
        "channel_binding",
        "gssencmode",
        "gssdelegation",
        "requiressl",
        "sslcompression",
        "sslsni",
        "sslcertmode",
        "requirepeer",
        "require_auth",
        "load_balance_hosts",
        "fallback_application_name",
        "replication",
    }
)
"""libpq connection options that asyncpg does not know: it would send them to the server as settings (and
the login would fail with "unrecognized configuration parameter"). They tune the client's connection, not
who logs in, so they are left out when asyncpg connects."""


_HOST = r"(?:\[[0-9A-Za-z:.%]*\]|[^:/?#@\[\],]*)(?::[0-9]*)?"
_HOSTS = re.compile(f"{_HOST}(?:,{_HOST})*")
"""``host[:port][,host[:port]...]``: a port is digits. A password with an unencoded ``/``, ``?`` or ``@``
cuts the URL elsewhere, leaving ``user:pass...`` where the host should be; this refuses it, so that
``describe()`` never puts a piece of a password into a message."""


class InvalidUrl(ValueError):
    """Not a ``postgresql://`` URL; the message never quotes it."""


@dataclass(frozen=True)
class PgUrl:
    """The parts of a ``postgresql://`` URL. ``userinfo`` is still percent-encoded."""

    scheme: str
    userinfo: str | None
    hosts: str
    """``host[:port][,host[:port]...]`` as written; empty when the host is in the query (a socket)."""
    path: str
    """``/dbname`` or empty."""
    query: str
    """Without the ``?``; may be empty."""

    @classmethod
    def parse(cls, url: str) -> PgUrl:
        scheme = next((s for s in SCHEMES if url.startswith(s)), None)
        if scheme is None:
            raise InvalidUrl("is not a postgresql:// URL")
        rest = url[len(scheme) :]
        rest, _, query = rest.partition("?")
        authority, slash, database = rest.partition("/")
        userinfo, at, hosts = authority.rpartition("@")
        if "#" in query or "#" in database:
            raise InvalidUrl("has a #fragment, which libpq does not accept")
        if not _HOSTS.fullmatch(hosts) or (not at and "@" in database):
            raise InvalidUrl(
                "has no valid host[:port] (percent-encode any '/', '?', '@' or '#' in the user or password)"
            )
        return cls(scheme, userinfo if at else None, hosts, slash + database, query)

    def __str__(self) -> str:
        userinfo = f"{self.userinfo}@" if self.userinfo is not None else ""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}{userinfo}{self.hosts}{self.path}{query}"

    @property
    def user(self) -> str | None:
        """The user name from the user-info part or the ``user`` query parameter."""
        if self.userinfo is not None:
            name = unquote(self.userinfo.partition(":")[0])
            if name:
                return name
        return self.params.get("user")

    @property
    def password(self) -> bytes | None:
        """The password from the user-info part or the ``password`` query parameter (raw bytes)."""
        if self.userinfo is not None:
            _, colon, encoded = self.userinfo.partition(":")
            if colon:
                return unquote_to_bytes(encoded)
        value = self.params.get("password")
        return value.encode("utf-8") if value is not None else None

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def database(self) -> str:
        return unquote(self.path[1:]) if self.path else ""

    def with_credentials(self, user: str | None, password: bytes) -> PgUrl:
        """This URL logging in as ``user`` (keep the current one when ``None``) with ``password``.

        Everything else stays as written, except ``user``/``password``/``passfile`` query parameters,
        which would override the user-info part.
        """
        name = user if user is not None else (self.user or "")
        userinfo = f"{quote(name, safe='')}:{quote(password, safe='')}"
        pairs = parse_qsl(self.query, keep_blank_values=True)
        query = self.query
        if any(key in CREDENTIAL_PARAMS for key, _ in pairs):
            query = urlencode([(key, value) for key, value in pairs if key not in CREDENTIAL_PARAMS])
        return PgUrl(self.scheme, userinfo, self.hosts, self.path, query)

    def for_asyncpg(self) -> str:
        """This URL as asyncpg should get it: without libpq-only client options (LIBPQ_CLIENT_PARAMS)."""
        pairs = parse_qsl(self.query, keep_blank_values=True)
        if not any(key in LIBPQ_CLIENT_PARAMS for key, _ in pairs):
            return str(self)
        kept = urlencode([(key, value) for key, value in pairs if key not in LIBPQ_CLIENT_PARAMS])
        return str(PgUrl(self.scheme, self.userinfo, self.hosts, self.path, kept))

    def describe(self) -> str:
        """``host:port/dbname`` (or the socket directory) for messages: no user, password or other query."""
        params = self.params
        where = self.hosts or params.get("host", "") or "localhost"
        if not self.hosts and "port" in params:
            where += f":{params['port']}"
        return f"{where}/{self.database}" if self.database else where
