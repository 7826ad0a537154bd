"""The same operations on SecretManager (the emulator) and LocalSecretManager give the same results.

Each step's observable result (value, version number and state, error class and status, metadata) is
recorded on both backends; the two tables must be equal, and the table itself is checked against what
Secret Manager documents, so that two equally wrong backends do not pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.secrets import (
    LocalSecretManager,
    SecretInfo,
    SecretManager,
    SecretsBackend,
    SecretsError,
    SecretType,
    VersionInfo,
)

WHEN = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)


def observable(value: Any) -> Any:
    """What a user sees of a result, without times and etags that differ by nature."""
    if isinstance(value, VersionInfo):
        return ("version", value.secret_id, value.version, value.state)
    if isinstance(value, SecretInfo):
        return (
            "secret",
            value.secret_id,
            value.secret_type,
            dict(value.labels),
            dict(value.annotations),
            value.rotation_period,
            value.next_rotation_time == WHEN if value.next_rotation_time is not None else None,
        )
    if isinstance(value, list):
        return [observable(item) for item in value]
    return value


Step = Callable[[SecretsBackend, dict[str, str]], Awaitable[Any]]


async def stale_annotation(b: SecretsBackend, memo: dict[str, str]) -> Any:
    return await b.update_annotations("db", {"lock": "late"}, etag=memo["etag"])


async def fresh_annotation(b: SecretsBackend, memo: dict[str, str]) -> Any:
    memo["etag"] = (await b.get_secret_info("db")).etag
    return await b.update_annotations("db", {"lock": "me"}, ["owner"], etag=memo["etag"])


STEPS: list[tuple[str, Step, Any]] = [
    (
        "create",
        lambda b, m: b.create_secret("db", "one", SecretType.DATABASE, {"team": "a"}, {"owner": "ops"}),
        ("ok", ("version", "db", "1", "ENABLED")),
    ),
    (
        "create twice",
        lambda b, m: b.create_secret("db", "x", SecretType.DATABASE),
        ("SecretsError", "ALREADY_EXISTS"),
    ),
    (
        "create api key",
        lambda b, m: b.create_secret("key", "k", SecretType.API_KEY),
        ("ok", ("version", "key", "1", "ENABLED")),
    ),
    (
        "create tls",
        lambda b, m: b.create_secret("tls", "pem", SecretType.TLS_CERT),
        ("ok", ("version", "tls", "1", "ENABLED")),
    ),
    ("get", lambda b, m: b.get_secret("db"), ("ok", "one")),
    ("add", lambda b, m: b.add_version("db", "two"), ("ok", ("version", "db", "2", "ENABLED"))),
    ("get bytes", lambda b, m: b.get_secret_bytes("db"), ("ok", b"two")),
    (
        "list versions",
        lambda b, m: b.list_versions("db"),
        ("ok", [("version", "db", "2", "ENABLED"), ("version", "db", "1", "ENABLED")]),
    ),
    ("disable 2", lambda b, m: b.disable_version("db", "2"), ("ok", ("version", "db", "2", "DISABLED"))),
    ("get latest (disabled)", lambda b, m: b.get_secret("db"), ("VersionNotEnabled", "FAILED_PRECONDITION")),
    ("get 1", lambda b, m: b.get_secret("db", "1"), ("ok", "one")),
    ("resolve latest", lambda b, m: b.resolve_version("db"), ("ok", ("version", "db", "2", "DISABLED"))),
    ("enable 2", lambda b, m: b.enable_version("db", "2"), ("ok", ("version", "db", "2", "ENABLED"))),
    ("get latest", lambda b, m: b.get_secret("db"), ("ok", "two")),
    ("destroy 1", lambda b, m: b.destroy_version("db", "1"), ("ok", ("version", "db", "1", "DESTROYED"))),
    ("get destroyed", lambda b, m: b.get_secret("db", "1"), ("VersionNotEnabled", "FAILED_PRECONDITION")),
    ("destroy again", lambda b, m: b.destroy_version("db", "1"), ("SecretsError", "FAILED_PRECONDITION")),
    ("enable destroyed", lambda b, m: b.enable_version("db", "1"), ("SecretsError", "FAILED_PRECONDITION")),
    ("disable latest", lambda b, m: b.disable_version("db", "latest"), ("SecretsError", "INVALID_ARGUMENT")),
    ("get unknown version", lambda b, m: b.get_secret("db", "9"), ("SecretNotFound", "NOT_FOUND")),
    ("get unknown alias", lambda b, m: b.get_secret("db", "prod"), ("SecretNotFound", "NOT_FOUND")),
    ("get unknown secret", lambda b, m: b.get_secret("nope"), ("SecretNotFound", "NOT_FOUND")),
    ("add to unknown", lambda b, m: b.add_version("nope", "x"), ("SecretNotFound", "NOT_FOUND")),
    ("info unknown", lambda b, m: b.get_secret_info("nope"), ("SecretNotFound", "NOT_FOUND")),
    (
        "info",
        lambda b, m: b.get_secret_info("db"),
        (
            "ok",
            (
                "secret",
                "db",
                SecretType.DATABASE,
                {"team": "a", "secret-type": "database"},
                {"owner": "ops"},
                timedelta(days=90),
                False,
            ),
        ),
    ),
    (
        "annotate",
        fresh_annotation,
        (
            "ok",
            (
                "secret",
                "db",
                SecretType.DATABASE,
                {"team": "a", "secret-type": "database"},
                {"lock": "me"},
                timedelta(days=90),
                False,
            ),
        ),
    ),
    ("annotate with a stale etag", stale_annotation, ("ConcurrentModification", "FAILED_PRECONDITION")),
    (
        "schedule",
        lambda b, m: b.set_next_rotation_time("db", WHEN),
        (
            "ok",
            (
                "secret",
                "db",
                SecretType.DATABASE,
                {"team": "a", "secret-type": "database"},
                {"lock": "me"},
                timedelta(days=90),
                True,
            ),
        ),
    ),
    ("tls info", lambda b, m: _rotation_of(b, "tls"), ("ok", (None, False))),
    ("list all", lambda b, m: _ids(b.list_secrets()), ("ok", ["db", "key", "tls"])),
    ("list database", lambda b, m: _ids(b.list_secrets([SecretType.DATABASE])), ("ok", ["db"])),
    (
        "list api keys and oauth",
        lambda b, m: _ids(b.list_secrets([SecretType.API_KEY, SecretType.OAUTH_TOKEN])),
        ("ok", ["key"]),
    ),
    ("delete", lambda b, m: b.delete_secret("key"), ("ok", None)),  # both managers offer it
    ("get deleted", lambda b, m: b.get_secret("key"), ("SecretNotFound", "NOT_FOUND")),
]


async def _ids(infos: Awaitable[list[SecretInfo]]) -> list[str]:
    return [info.secret_id for info in await infos]


async def _rotation_of(b: SecretsBackend, secret_id: str) -> tuple[timedelta | None, bool]:
    info = await b.get_secret_info(secret_id)
    return info.rotation_period, info.next_rotation_time is not None


async def run_table(backend: SecretsBackend) -> list[tuple[str, Any]]:
    memo: dict[str, str] = {}
    rows = []
    for label, step, _ in STEPS:
        try:
            outcome: Any = ("ok", observable(await step(backend, memo)))
        except SecretsError as error:
            outcome = (type(error).__name__, error.code)
        rows.append((label, outcome))
    return rows


async def test_both_backends_behave_the_same(sm: SecretManager, tmp_path: Path) -> None:
    local = LocalSecretManager(tmp_path / ".env")
    remote_rows = await run_table(sm)
    local_rows = await run_table(local)
    expected = [(label, outcome) for label, _, outcome in STEPS]
    assert remote_rows == expected
    assert local_rows == expected
