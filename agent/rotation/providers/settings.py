"""Reading a provider's settings mapping: typed getters that collect every problem, then one clear error.

Settings come from the rotation config file (YAML: ints, strings, lists) or from labels (strings only,
converted by ``registry.settings_from_labels``). Every problem names the provider and the setting; unknown
settings are errors (a typo such as ``lenght`` must not silently fall back to a default).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from agent.rotation.providers.base import ProviderConfigError, ProviderSettings

PROVIDER_KEY = "provider"
"""The settings key that names the provider."""


class SettingsReader:
    """Typed access to one provider's settings. Call ``finish()`` after the last getter."""

    def __init__(self, provider: str, settings: ProviderSettings) -> None:
        self.provider = provider
        self._settings = settings
        self._read: set[str] = {PROVIDER_KEY}
        self._problems: list[str] = []

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._settings.get(key)

    def problem(self, key: str, message: str) -> None:
        """Record a problem with setting ``key`` (the message says what is expected)."""
        self._problems.append(f"setting {key!r} {message}")

    def string(
        self, key: str, *, default: str | None = None, required: bool = False, allow_empty: bool = False
    ) -> str | None:
        """A string (non-empty unless ``allow_empty``); ``default`` when absent (required: a problem)."""
        value = self._get(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if not isinstance(value, str) or not (value or allow_empty):
            self.problem(key, f"must be a non-empty string (got {_shape(value)})")
            return default
        return value

    def integer(self, key: str, *, default: int, minimum: int, maximum: int) -> int:
        """A whole number in ``[minimum, maximum]``; ``default`` when absent."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.problem(key, f"must be a whole number from {minimum} to {maximum} (got {_shape(value)})")
            return default
        return value

    def number(self, key: str, *, default: float, minimum: float, maximum: float) -> float:
        """A number of seconds (int or float) in ``(minimum, maximum]``; ``default`` when absent."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not minimum < value <= maximum:
            self.problem(
                key, f"must be a number above {minimum:g} and at most {maximum:g} (got {_shape(value)})"
            )
            return default
        return float(value)

    def choice(self, key: str, choices: Collection[str], *, default: str) -> str:
        """One of ``choices``; ``default`` when absent."""
        value = self._get(key)
        if value is None:
            return default
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(sorted(choices))} (got {_shape(value)})")
            return default
        return str(value)

    def argv(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        """A command as a non-empty list of strings (no shell); ``None`` when absent."""
        value = self._get(key)
        if value is None:
            if required:
                self.problem(
                    key, "is required: a command as a list, e.g. [/usr/local/bin/mint-key, --env, prod]"
                )
            return None
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(part, str) for part in value)
            or not value[0]
        ):
            self.problem(
                # Only the type: a command line written as one string may carry a token.
                key,
                f"must be a command as a non-empty list of strings, no shell (got {type(value).__name__})",
            )
            return None
        return tuple(value)

    def finish(self) -> None:
        """Raise one ProviderConfigError listing every problem, unknown settings included."""
        unknown = sorted(str(key) for key in self._settings if key not in self._read)
        for key in unknown:
            known = ", ".join(sorted(self._read - {PROVIDER_KEY}))
            self._problems.append(f"unknown setting {key!r} (known: {known or 'none'})")
        if self._problems:
            raise ProviderConfigError(f"rotation provider {self.provider!r}: " + "; ".join(self._problems))


def _shape(value: object) -> str:
    """How a bad setting is shown in an error: numbers as they are, strings quoted and cut short (only used
    for settings that never hold a credential: lengths, encodings, formats), anything else by type."""
    if isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return type(value).__name__
