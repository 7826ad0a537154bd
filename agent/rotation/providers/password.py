"""``password``: a random password from letters, digits and a small safe set of punctuation.

Each character is drawn with ``secrets.choice`` from the alphabet; a draw that lacks one of the classes
(lowercase, uppercase, digit, symbol) is thrown away and drawn again, so every password has each class and
all such passwords are equally likely. The default symbols ``-_.~`` are RFC 3986's unreserved punctuation:
they need no quoting in URLs (``postgresql://user:PASSWORD@host``), shells, ``.env`` files, YAML or libpq
``key=value`` strings. ``symbols`` may name other ASCII punctuation, or be empty for letters and digits only.
Nothing is applied anywhere; ``apply`` and ``rollback`` do nothing (``postgres`` reuses the generator).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Final

from agent.rotation.providers.base import ProviderSettings, RotationContext, ValidationFailed
from agent.rotation.providers.settings import SettingsReader

DEFAULT_LENGTH: Final = 32
MIN_LENGTH: Final = 16
MAX_LENGTH: Final = 1024
DEFAULT_SYMBOLS: Final = "-_.~"
_CLASSES: Final = (string.ascii_lowercase, string.ascii_uppercase, string.digits)


@dataclass(frozen=True)
class PasswordPolicy:
    """How long a password is and which punctuation it may use (letters and digits always)."""

    length: int = DEFAULT_LENGTH
    symbols: str = DEFAULT_SYMBOLS

    def __post_init__(self) -> None:
        if not MIN_LENGTH <= self.length <= MAX_LENGTH:
            raise ValueError(f"length must be from {MIN_LENGTH} to {MAX_LENGTH} characters")
        problem = symbols_problem(self.symbols)
        if problem is not None:
            raise ValueError(f"symbols {problem}")

    @property
    def classes(self) -> tuple[str, ...]:
        """The character classes a password must each contain."""
        return (*_CLASSES, self.symbols) if self.symbols else _CLASSES

    @property
    def alphabet(self) -> str:
        return "".join(self.classes)

    def generate(self) -> str:
        """A new password with every class present (rejection sampling keeps the choice uniform)."""
        alphabet = self.alphabet
        while True:
            candidate = "".join(secrets.choice(alphabet) for _ in range(self.length))
            if self.problem(candidate) is None:
                return candidate

    def problem(self, password: str) -> str | None:
        """Why ``password`` breaks this policy (never quoting it), or ``None``."""
        if len(password) != self.length:
            return f"has {len(password)} characters, expected {self.length}"
        allowed = set(self.alphabet)
        if any(ch not in allowed for ch in password):
            return "has characters outside the alphabet (letters, digits, " + (
                f"symbols {self.symbols})" if self.symbols else "no symbols)"
            )
        names = ("lowercase letter", "uppercase letter", "digit", "symbol")
        for name, chars in zip(names, self.classes, strict=False):
            if not any(ch in chars for ch in password):
                return f"has no {name}"
        return None


def symbols_problem(symbols: str) -> str | None:
    """Why ``symbols`` is not a usable symbol set, or ``None``."""
    bad = sorted({ch for ch in symbols if ch not in string.punctuation})
    if bad:
        return f"may only hold ASCII punctuation (got {''.join(bad)!r})"
    if len(set(symbols)) != len(symbols):
        return "lists a character twice"
    return None


def read_policy(reader: SettingsReader) -> PasswordPolicy:
    """``length`` and ``symbols`` from a provider's settings (shared with ``postgres``)."""
    length = reader.integer("length", default=DEFAULT_LENGTH, minimum=MIN_LENGTH, maximum=MAX_LENGTH)
    symbols = reader.string("symbols", default=DEFAULT_SYMBOLS, allow_empty=True)  # "" = no symbols
    assert symbols is not None
    problem = symbols_problem(symbols)
    if problem is not None:
        reader.problem("symbols", problem)
        symbols = DEFAULT_SYMBOLS
    return PasswordPolicy(length, symbols)


class PasswordProvider:
    """A random password; validated for length and character set."""

    name = "password"

    def __init__(self, policy: PasswordPolicy | None = None) -> None:
        self.policy = policy or PasswordPolicy()

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> PasswordProvider:
        """Settings: ``length`` (16..1024, default 32), ``symbols`` (default ``-_.~``; "" for none)."""
        reader = SettingsReader(cls.name, settings)
        policy = read_policy(reader)
        reader.finish()
        return cls(policy)

    def __repr__(self) -> str:
        return f"PasswordProvider({self.policy!r})"

    async def generate(self, ctx: RotationContext) -> bytes:
        return self.policy.generate().encode("ascii")

    async def apply(self, ctx: RotationContext, new_value: bytes) -> None:
        """Nothing to apply."""

    async def validate(self, ctx: RotationContext, new_value: bytes) -> None:
        try:
            text = new_value.decode("ascii")
        except UnicodeDecodeError:
            raise ValidationFailed(f"secret {ctx.secret_id!r}: the new password is not ASCII") from None
        problem = self.policy.problem(text)
        if problem is not None:
            raise ValidationFailed(f"secret {ctx.secret_id!r}: the new password {problem}")

    async def rollback(self, ctx: RotationContext, new_value: bytes) -> None:
        """Nothing was applied."""
