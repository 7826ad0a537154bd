"""The AgentError tree.

Every error the agent raises on purpose derives from AgentError, so the CLI can print one clear line
instead of a traceback. No message in this tree may ever contain a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass


class AgentError(Exception):
    """Root of every error the agent raises deliberately."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, located by its path (e.g. ``secrets[2].ref``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(AgentError):
    """The configuration is invalid. Carries *all* problems found, so users fix them in one go."""

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems: tuple[Problem, ...] = (problems,) if isinstance(problems, Problem) else tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidReference(ConfigError):
    """A secret reference could not be parsed; the message names the reference and what is wrong."""

    def __init__(self, reference: str, reason: str, path: str = "") -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(Problem(path, f"secret reference {reference!r}: {reason}"))


class SourceError(AgentError):
    """A secret source (Secret Manager, .env) failed for one reference.

    ``code`` is the backend's status name (``NOT_FOUND``, ``PERMISSION_DENIED``, ``UNAVAILABLE``,
    ``DATA_LOSS`` for a checksum mismatch, ...), ``ref`` the reference as the user wrote it or its canonical
    name, ``hint`` a short suggestion for the operator. None of them ever holds a secret value.
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN", ref: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.ref = ref
        self.hint = hint


class PermanentSourceError(SourceError):
    """Retrying will not help: NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, bad checksum config."""


class TransientSourceError(SourceError):
    """Worth retrying with backoff: UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, CRC mismatch."""


class SinkError(AgentError):
    """Writing secrets to their destination (files, env file) failed; the old snapshot is intact."""


class NotifyError(AgentError):
    """Telling the app to reload failed."""
