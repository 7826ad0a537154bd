"""``manual``: the new value is given by a person or a pipeline, from a file or stdin.

``file: PATH`` reads the file; ``file: "-"`` or no ``file`` reads stdin (without echo when stdin is a
terminal). One trailing newline (``\\n`` or ``\\r\\n``) is stripped, as editors and ``echo`` add one; an empty
value is refused. Stdin can feed only one secret per run: its first read takes everything. Nothing is
applied, so ``apply``/``rollback`` do nothing and validation only re-checks that the value is not empty.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import Final

from agent.rotation.providers.base import (
    MAX_VALUE_BYTES,
    ProviderError,
    ProviderSettings,
    RotationContext,
    ValidationFailed,
    strip_newline,
)
from agent.rotation.providers.settings import SettingsReader

STDIN: Final = "-"


class ManualProvider:
    """The value from ``path`` (``None`` = stdin)."""

    name = "manual"

    def __init__(self, path: str | None = None) -> None:
        self.path = None if path in (None, STDIN) else path

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> ManualProvider:
        """Settings: ``file`` (a path, or ``-`` for stdin; default stdin)."""
        reader = SettingsReader(cls.name, settings)
        path = reader.string("file")
        reader.finish()
        return cls(path)

    def __repr__(self) -> str:
        return f"ManualProvider(file={self.path or STDIN!r})"

    async def generate(self, ctx: RotationContext) -> bytes:
        source = self.path or "stdin"
        try:
            raw = await asyncio.to_thread(self._read, ctx)
        except OSError as e:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: cannot read the new value from {source}: {e.strerror}"
            ) from None
        value = strip_newline(raw)
        if not value:
            raise ProviderError(f"secret {ctx.secret_id!r}: the new value from {source} is empty")
        if len(value) > MAX_VALUE_BYTES:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: the new value from {source} is {len(value)} bytes, more than the "
                f"{MAX_VALUE_BYTES} a secret version can hold"
            )
        return value

    def _read(self, ctx: RotationContext) -> bytes:
        if self.path is not None:
            with open(self.path, "rb") as f:
                return f.read(MAX_VALUE_BYTES + 3)  # +3: room for a newline, and for "too long"
        if sys.stdin is None:  # started without a stdin at all
            raise ProviderError(f"secret {ctx.secret_id!r}: no stdin to read the new value from; set 'file'")
        if sys.stdin.isatty():
            # A person at a terminal: prompt on stderr and don't echo the value.
            return getpass.getpass(f"New value for {ctx.secret_id}: ", stream=sys.stderr).encode("utf-8")
        return sys.stdin.buffer.read(MAX_VALUE_BYTES + 3)

    async def apply(self, ctx: RotationContext, new_value: bytes) -> None:
        """Nothing to apply."""

    async def validate(self, ctx: RotationContext, new_value: bytes) -> None:
        if not new_value:
            raise ValidationFailed(f"secret {ctx.secret_id!r}: the new value is empty")

    async def rollback(self, ctx: RotationContext, new_value: bytes) -> None:
        """Nothing was applied."""
