"""What kind of secret a secret is, and how often each kind is rotated.

The kind is stored on the secret as the label ``secret-type`` (``TYPE_LABEL``) so that rotation tooling,
dashboards and ``gcloud secrets list --filter=labels.secret-type=database`` all agree on it.
"""

from __future__ import annotations

import enum
from datetime import timedelta

TYPE_LABEL = "secret-type"
"""The label that carries a secret's type (label values: ``SecretType.value``)."""


class SecretType(enum.Enum):
    """A kind of secret. The value is the ``secret-type`` label value (lowercase, label-safe)."""

    DATABASE = "database"
    API_KEY = "api-key"
    ENCRYPTION_KEY = "encryption-key"
    JWT_SECRET = "jwt-secret"  # noqa: S105 (a label value)
    SESSION_SECRET = "session-secret"  # noqa: S105
    OAUTH_TOKEN = "oauth-token"  # noqa: S105
    TLS_CERT = "tls-cert"

    @property
    def rotation_period(self) -> timedelta | None:
        """How old the current version may get before it is due; ``None`` = rotated elsewhere (TLS)."""
        return _PERIODS[self]

    @property
    def rotated_by_us(self) -> bool:
        """False for kinds that another system rotates (TLS certificates: cert-manager)."""
        return self.rotation_period is not None

    @property
    def group(self) -> str:
        """The ``secrets-agent rotate`` selector this kind belongs to."""
        return _GROUPS[self]

    @classmethod
    def from_label(cls, value: str | None) -> SecretType | None:
        """The type named by a ``secret-type`` label value; ``None`` when absent or unknown."""
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return None


_PERIODS: dict[SecretType, timedelta | None] = {
    SecretType.DATABASE: timedelta(days=90),
    SecretType.API_KEY: timedelta(days=30),
    SecretType.ENCRYPTION_KEY: timedelta(days=180),
    SecretType.JWT_SECRET: timedelta(days=180),
    SecretType.SESSION_SECRET: timedelta(days=180),
    SecretType.OAUTH_TOKEN: timedelta(days=30),
    SecretType.TLS_CERT: None,
}

_GROUPS: dict[SecretType, str] = {
    SecretType.DATABASE: "database",
    SecretType.API_KEY: "api-keys",
    SecretType.ENCRYPTION_KEY: "symmetric",
    SecretType.JWT_SECRET: "symmetric",
    SecretType.SESSION_SECRET: "symmetric",
    SecretType.OAUTH_TOKEN: "oauth",
    SecretType.TLS_CERT: "tls",
}

SELECTORS = ("all", "symmetric", "api-keys", "database", "oauth")
"""The group words ``secrets-agent rotate`` accepts (anything else is a secret id)."""
