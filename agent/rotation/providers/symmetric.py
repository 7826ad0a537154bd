"""``symmetric``: random bytes for encryption keys, JWT and session secrets, in a text-safe encoding.

The value is ``length`` bytes from the OS CSPRNG (``secrets.token_bytes``) encoded as ``encoding``:

* ``base64``: RFC 4648 section 4, with padding (what ``openssl rand -base64`` prints);
* ``base64url``: RFC 4648 section 5, URL- and filename-safe, no padding (what ``secrets.token_urlsafe``
  prints; validation also accepts it padded);
* ``hex``: lowercase hex (validation accepts either case);
* ``raw``: the bytes themselves (binary secret payloads; not for env files).

Nothing is applied anywhere (the app picks the new version up), so ``apply`` and ``rollback`` do nothing.
Validation decodes the value in its encoding and checks that it is exactly ``length`` bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Final, Literal, get_args

from agent.rotation.providers.base import ProviderSettings, RotationContext, ValidationFailed
from agent.rotation.providers.settings import SettingsReader

Encoding = Literal["base64", "base64url", "hex", "raw"]
ENCODINGS: Final[tuple[str, ...]] = get_args(Encoding)
MIN_LENGTH: Final = 16
"""Bytes; 128 bits is the least a symmetric key should have."""
MAX_LENGTH: Final = 1024
DEFAULT_LENGTH: Final = 32
DEFAULT_ENCODING: Final[Encoding] = "base64"

_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2})*")


def encode(raw: bytes, encoding: Encoding) -> bytes:
    """``raw`` in ``encoding`` (see the module docstring for each form)."""
    if encoding == "base64":
        return base64.b64encode(raw)
    if encoding == "base64url":
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    if encoding == "hex":
        return raw.hex().encode("ascii")
    return raw


def decode(value: bytes, encoding: Encoding) -> bytes:
    """The bytes ``value`` encodes; ValueError (naming the encoding, never the value) when it is not valid."""
    if encoding == "raw":
        return value
    if encoding == "hex":
        if not _HEX.fullmatch(value):
            raise ValueError("is not valid hex")
        return bytes.fromhex(value.decode("ascii"))
    if encoding == "base64":
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except binascii.Error:
            raise ValueError("is not valid base64 (RFC 4648, padded)") from None
    unpadded = value.rstrip(b"=")
    padding = len(value) - len(unpadded)
    if not _BASE64URL.fullmatch(unpadded) or len(unpadded) % 4 == 1 or (padding and len(value) % 4):
        raise ValueError("is not valid base64url (RFC 4648 section 5)")
    return base64.urlsafe_b64decode(unpadded + b"=" * (-len(unpadded) % 4))


class SymmetricProvider:
    """Random ``length`` bytes in ``encoding``; validated by decoding them back."""

    name = "symmetric"

    def __init__(self, length: int = DEFAULT_LENGTH, encoding: Encoding = DEFAULT_ENCODING) -> None:
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise ValueError(f"length must be from {MIN_LENGTH} to {MAX_LENGTH} bytes")
        self.length = length
        self.encoding: Encoding = encoding

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> SymmetricProvider:
        """Settings: ``length`` (bytes, 16..1024, default 32), ``encoding`` (default base64)."""
        reader = SettingsReader(cls.name, settings)
        length = reader.integer("length", default=DEFAULT_LENGTH, minimum=MIN_LENGTH, maximum=MAX_LENGTH)
        encoding = reader.choice("encoding", ENCODINGS, default=DEFAULT_ENCODING)
        reader.finish()
        return cls(length, encoding)  # type: ignore[arg-type]  # choice() checked it is an Encoding

    def __repr__(self) -> str:
        return f"SymmetricProvider(length={self.length}, encoding={self.encoding!r})"

    async def generate(self, ctx: RotationContext) -> bytes:
        return encode(secrets.token_bytes(self.length), self.encoding)

    async def apply(self, ctx: RotationContext, new_value: bytes) -> None:
        """Nothing to apply: apps read the new version."""

    async def validate(self, ctx: RotationContext, new_value: bytes) -> None:
        reason = self.problem(new_value)
        if reason is not None:
            raise ValidationFailed(f"secret {ctx.secret_id!r}: the new value {reason}")

    def problem(self, value: bytes) -> str | None:
        """Why ``value`` is not a valid key for these settings (no value in the text), or ``None``."""
        try:
            raw = decode(value, self.encoding)
        except ValueError as e:
            return str(e)
        if len(raw) != self.length:
            return f"decodes to {len(raw)} bytes, expected {self.length} ({self.encoding})"
        return None

    async def rollback(self, ctx: RotationContext, new_value: bytes) -> None:
        """Nothing was applied, so nothing to undo."""
