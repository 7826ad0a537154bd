"""What every way of telling the app has in common.

Notifiers run after a snapshot swap has succeeded; a failing notifier is logged and retried but never rolls
the files back (the new secrets are on disk either way). Notifiers only ever see the *versions* of the
secrets (local name -> version number), never their values, so everything they say may be logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

VERSIONS_ENV = "SECRETS_AGENT_VERSIONS"
"""Environment variable through which a command notifier receives the versions, as a JSON object."""

EVENT_NAME = "secrets-rotated"
"""The ``event`` field of the HTTP notifier's JSON body."""


class Notifier(Protocol):
    """One way of telling the app to reload."""

    name: str
    """``signal``, ``http`` or ``command``: used in logs and metric labels."""

    async def notify(self, versions: Mapping[str, str]) -> None:
        """Tell the app; raise NotifyError (whose text never holds a secret value) when that failed."""
        ...
