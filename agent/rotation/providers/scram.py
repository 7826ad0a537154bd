"""SCRAM-SHA-256 password verifiers, computed on the client as libpq's ``PQencryptPasswordConn`` does.

``ALTER ROLE r PASSWORD 'SCRAM-SHA-256$...'`` stores a verifier that the server cannot turn back into the
password; sending it instead of the plaintext keeps the password out of the server's statement log,
``pg_stat_statements`` and any proxy in between (this is what psql's ``\\password`` does).

The verifier (RFC 5802, RFC 7677, PostgreSQL's ``scram_build_secret``) is::

    SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>

    SaltedPassword = PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations)
    StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
    ServerKey      = HMAC(SaltedPassword, "Server Key")

The password is prepared with SASLprep (RFC 4013) exactly as PostgreSQL's ``pg_saslprep`` does it, so that
clients (libpq, asyncpg), which prepare it the same way when they log in, produce a matching proof: pure
ASCII passes unchanged; otherwise non-ASCII spaces become spaces, "mapped to nothing" characters go, the
result is NFKC-normalised; and a password that is not UTF-8 or holds a prohibited character is used as raw
bytes, as PostgreSQL does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from typing import Final

ITERATIONS: Final = 4096
"""PostgreSQL's default ``scram_iterations`` (and libpq's)."""
SALT_LENGTH: Final = 16
"""Bytes of random salt, as libpq uses."""
PREFIX: Final = "SCRAM-SHA-256"


def verifier(password: bytes, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier for ``password`` (a random 16-byte salt unless one is given)."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_LENGTH) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"{PREFIX}${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse(text: str) -> tuple[int, bytes, bytes, bytes]:
    """``(iterations, salt, stored_key, server_key)`` of a verifier; ValueError if it is not one."""
    try:
        prefix, params, keys = text.split("$")
        iterations_text, salt_text = params.split(":")
        stored_text, server_text = keys.split(":")
        if prefix != PREFIX:
            raise ValueError
        return (
            int(iterations_text),
            base64.b64decode(salt_text, validate=True),
            base64.b64decode(stored_text, validate=True),
            base64.b64decode(server_text, validate=True),
        )
    except ValueError:
        raise ValueError("not a SCRAM-SHA-256 verifier") from None


def saslprep(password: bytes) -> bytes:
    """``password`` prepared as PostgreSQL's ``pg_saslprep`` prepares it (see the module docstring)."""
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return password
    if text.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    if not mapped:
        return password
    # stringprep's tables are Unicode 3.2 (RFC 3454); normalise with the same version.
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if any(_prohibited(ch) for ch in normalized):
        return password
    if any(stringprep.in_table_d1(ch) for ch in normalized) and (
        any(stringprep.in_table_d2(ch) for ch in normalized)
        or not stringprep.in_table_d1(normalized[0])
        or not stringprep.in_table_d1(normalized[-1])
    ):
        return password
    return normalized.encode("utf-8")


def _prohibited(ch: str) -> bool:
    """RFC 4013 section 2.3 prohibited output, plus unassigned code points (as PostgreSQL checks them)."""
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
        or stringprep.in_table_a1(ch)
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
