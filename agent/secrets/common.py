"""Small pieces both managers share: value conversion, the choice of SecretsError subclass, arguments."""

from __future__ import annotations

import os
from pathlib import Path

from agent.secrets.interface import ConcurrentModification, SecretNotFound, SecretsError, VersionNotEnabled


def as_bytes(secret_data: str | bytes, secret_id: str) -> bytes:
    """A value as bytes (text is encoded as UTF-8; text that cannot be, lone surrogates, is refused)."""
    if not isinstance(secret_data, str):
        return bytes(secret_data)
    try:
        return secret_data.encode("utf-8")
    except UnicodeEncodeError:
        raise SecretsError(
            f"secret {secret_id!r}: INVALID_ARGUMENT: the value is text that cannot be encoded as UTF-8 "
            "(a lone surrogate); pass bytes",
            code="INVALID_ARGUMENT",
            secret_id=secret_id,
        ) from None


def as_text(data: bytes, secret_id: str, version: str) -> str:
    """A value as UTF-8 text; SecretsError (naming the secret, never the value) when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError(
            f"secret {secret_id!r} version {version}: the value is not UTF-8 text; use get_secret_bytes()",
            code="INVALID_ARGUMENT",
            secret_id=secret_id,
        ) from None


def secrets_error(
    secret_id: str, code: str, detail: str, *, etag_sent: bool = False, reading_value: bool = False
) -> SecretsError:
    """The SecretsError for a status ``code``: ``secret 'ID': CODE: detail`` (one line, never a value).

    NOT_FOUND -> SecretNotFound; a failed precondition on an etag-guarded write -> ConcurrentModification
    (ABORTED too); a failed precondition when reading a value -> VersionNotEnabled.
    """
    detail = " ".join(detail.split())
    message = f"secret {secret_id!r}: {code}: {detail}" if detail else f"secret {secret_id!r}: {code}"
    kind: type[SecretsError] = SecretsError
    if code == "NOT_FOUND":
        kind = SecretNotFound
    elif etag_sent and code in ("FAILED_PRECONDITION", "ABORTED"):
        kind = ConcurrentModification
    elif reading_value and code == "FAILED_PRECONDITION":
        kind = VersionNotEnabled
    return kind(message, code=code, secret_id=secret_id)


def rotation_config_argument(rotation_config: object | None) -> object | None:
    """A manager's ``rotation_config`` as it is kept: a file path made absolute against the current
    directory now (as the ``.env`` path is), anything else unchanged; the rotation tooling interprets it."""
    if isinstance(rotation_config, str | os.PathLike):
        return Path(rotation_config).absolute()
    return rotation_config
