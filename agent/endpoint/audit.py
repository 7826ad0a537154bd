"""The audit log of secret reads (logger ``agent.audit``): which secret, which version, which client, what
result. Never the value, never the token.

Its own module because what a line says is a contract with whoever collects the audit trail, and because
identical reads are counted into one line: a log line costs more than serving the read itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from agent.observe.logs import fields

audit_log = logging.getLogger("agent.audit")

AUDIT_REPEAT_WINDOW = 10.0
"""Seconds over which identical reads (same secret, version, client and result) are counted into one line."""

AUDIT_RESULTS = {
    200: "ok",
    304: "not_modified",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "unknown",
    499: "client_gone",
    503: "not_fetched",
}
"""The ``result`` of a read by its status (``error`` for one not listed), unless the request names it
(``forwarded``: a proxy header; ``wrong_host``: a Host that is not loopback or configured)."""


class AuditKey(NamedTuple):
    """What the audit log says about a read; reads with equal keys are counted together (a NamedTuple:
    built and hashed for every read, a frozen dataclass costs three times as much).

    ``secret`` is None for a name that is not assigned to this agent: such a name is the client's free
    text (it could even be a value pasted into the URL by mistake), so it is never logged."""

    secret: str | None
    version: str | None
    client: str | None
    result: str
    status: int


_Fields = tuple[str | None, str | None, str | None, str, int]
"""An AuditKey's fields as a plain tuple."""


class AuditLog:
    """The audit log of secret reads: the first read of each AuditKey is logged at once; identical reads in
    the next ``window`` seconds are counted and logged as one line (``reads=N``) when the window ends.

    A log line costs about 45 µs (record, redaction, JSON, write): more than serving the read itself, so
    one line per read would halve the endpoint's throughput for an app that polls in a loop."""

    def __init__(self, window: float = AUDIT_REPEAT_WINDOW) -> None:
        self.window = window
        self._repeats: dict[_Fields, list[int]] = {}
        """Per read (an AuditKey; looked up by equal plain tuples too): the repeats not logged yet, in a list
        that a repeat increments in place (no second hashing of the key)."""
        self._timer: asyncio.TimerHandle | None = None

    def record(self, key: AuditKey) -> None:
        repeats = self._repeats.get(key)
        if repeats is not None:
            repeats[0] += 1
            return
        self._repeats[key] = [0]
        _audit_line(key, 1)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def read(
        self, secret: str | None, version: str | None, client: str | None, result: str, status: int
    ) -> None:
        """``record(AuditKey(...))`` for the endpoint's every read: a repeat (nearly every read of an app
        that polls) is counted under a plain tuple, equal to its AuditKey and hashed alike, so no AuditKey
        is built for it."""
        repeats = self._repeats.get((secret, version, client, result, status))
        if repeats is None:
            self.record(AuditKey(secret, version, client, result, status))
        else:
            repeats[0] += 1

    def flush(self) -> None:
        """Log the counted repeats now and start a new window (also at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        repeats, self._repeats = self._repeats, {}
        for key, (count,) in repeats.items():
            if count:
                _audit_line(AuditKey._make(key), count)


def _audit_line(key: AuditKey, reads: int) -> None:
    audit_log.info(
        "secret read: %s %s%s",
        key.secret or "(unknown name)",
        key.result,
        "" if reads == 1 else f" ({reads} reads)",
        extra=fields(
            secret=key.secret,
            version=key.version,
            client=key.client,
            result=key.result,
            status=key.status,
            reads=reads,
        ),
    )
