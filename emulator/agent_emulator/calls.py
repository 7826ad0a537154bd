"""The recent-calls log of the admin API (``GET /emulator/v1/calls``): who called what, billed to which
project, with what result.

One entry per Secret Manager call (either transport), STS token exchange and generateAccessToken, newest
last, at most :data:`MAX_ENTRIES` kept. An entry never holds a token, a subject token or a payload: only
names (method, resource, principal, quota project), the result and, for a failure, the message the caller
got (which never quotes a credential either).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 1000
"""How many calls the log keeps (the oldest are dropped first)."""
MAX_FIELD_CHARS = 512
"""Longest text kept in one field (a resource name or a message is cut there)."""

SECRET_MANAGER = "secretmanager.googleapis.com"  # noqa: S105 - a service name
STS = "sts.googleapis.com"
IAM_CREDENTIALS = "iamcredentials.googleapis.com"


def _cut(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "..."


@dataclass(frozen=True)
class CallRecord:
    """One finished call."""

    time: dt.datetime
    """When it finished, on the emulator's clock."""
    service: str
    """``secretmanager.googleapis.com``, ``sts.googleapis.com`` or ``iamcredentials.googleapis.com``."""
    method: str
    """``AccessSecretVersion``, ``ExchangeToken``, ``GenerateAccessToken``, ..."""
    resource: str
    """What it named: a secret or version, a parent, a provider (STS audience), a service account."""
    principal: str | None
    """Who called (the token's principal); for an exchange, the federated principal it issued a token
    for. None when the call carried no token the emulator knows."""
    quota_project: str | None
    """The ``x-goog-user-project`` it carried, if any."""
    result: str
    """``OK``, a status name (``PERMISSION_DENIED``) or, for STS, the OAuth error (``invalid_grant``)."""
    transport: str
    """``grpc`` or ``rest``."""
    message: str | None = None
    """The error message the caller got (None on success)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "service": self.service,
            "method": self.method,
            "resource": self.resource,
            "principal": self.principal,
            "quota_project": self.quota_project,
            "result": self.result,
            "transport": self.transport,
            "message": self.message,
        }


class CallLog:
    """A bounded, thread-safe log of recent calls."""

    def __init__(self, capacity: int = MAX_ENTRIES) -> None:
        self._entries: deque[CallRecord] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, entry: CallRecord) -> None:
        texts = (entry.resource, entry.principal, entry.quota_project, entry.message)
        if any(text is not None and len(text) > MAX_FIELD_CHARS for text in texts):
            entry = dataclasses.replace(
                entry,
                resource=_cut(entry.resource) or "",
                principal=_cut(entry.principal),
                quota_project=_cut(entry.quota_project),
                message=_cut(entry.message),
            )
        with self._lock:
            self._entries.append(entry)

    def recent(self, limit: int = 100) -> list[CallRecord]:
        """The last ``limit`` calls, oldest first."""
        with self._lock:
            entries = list(self._entries)
        return entries[-limit:] if limit > 0 else []

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
