"""What the parts of one endpoint share: the per-application EndpointState, and what a handler tells the
guard that accounts for it (a read's ReadResult, the note an event stream leaves).

Below the handlers, the middlewares and the connection plumbing, which all reach it through ``STATE``, so
that none of them has to import another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from aiohttp import web

from agent.core.model import Fetched, Output
from agent.core.serving.hosts import HostPolicy
from agent.core.store import SnapshotStore
from agent.endpoint.audit import AuditLog
from agent.endpoint.limits import endpoint_hosts
from agent.observe.metrics import Metrics

Served = Fetched | Output
"""What a read answers with: a secret's value as fetched (a snapshot not rendered yet) or a rendered output
(a secret's own file, a key, a template). Both carry the bytes, ``version``, ``crc32c`` and ``fetched_at``
the response headers are made of."""


@dataclass
class EndpointState:
    """What the handlers need; one per application."""

    store: SnapshotStore
    token: str
    refresh: Callable[[], float | None]
    """Asks for a forced round: None when queued, else seconds to wait (the 429's Retry-After)."""
    audit: bool
    max_wait: float
    metrics: Metrics | None
    ping_interval: float
    openapi: bytes
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the endpoint shuts down: long-polls answer and event streams end at once."""
    audit_trail: AuditLog = field(default_factory=lambda: AuditLog())
    files: Callable[[], Collection[str]] = frozenset
    """Every file the configuration renders now (paths inside ``output_dir``), rendered yet or not: what tells
    "not rendered yet" (503) from "no such file" (404) on ``/v1/files/{path}``."""
    hosts: HostPolicy = field(default_factory=endpoint_hosts)
    """The ``Host`` values answered (loopback, plus ``server.allowed_hosts``)."""
    _stopped: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def wait_for_change(self, after: int, within: float) -> None:
        """Return when the store's generation passes ``after``, ``within`` seconds pass, or we stop."""
        if not self.stopping.is_set():
            # No task per waiter: a rotation wakes 1,000 long-polls as 1,000 callbacks.
            await self.store.wait_for_generation(after, within, unless=self._stop_future())

    def known_file(self, path: str) -> bool:
        """Whether ``path`` is a file the configuration renders: configured, or in the current snapshot's
        outputs (which only the configuration can have put there). Exact lookups, never the file system; a
        path for which this is false is the client's free text, never echoed or logged."""
        return path in self.store.snapshot.file_outputs() or path in self.files()

    def _stop_future(self) -> asyncio.Future[None]:
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
        return self._stopped

    def stop(self) -> None:
        """The endpoint shuts down: wake every long-poll and event stream."""
        self.stopping.set()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)


ReadResult = tuple[web.StreamResponse, str | None, str | None]
"""What a read (``/v1/secrets/{name}``, ``/v1/files/{path}``) returns to the guard that accounts for it: the
response, the version it answered with (served, or current for a 304), and the audit result when the status
does not tell it (``not_delivered``)."""

STATE = web.AppKey("secrets_agent_endpoint", EndpointState)
STREAMING = web.RequestKey("streaming", bool)
"""Set once an event stream has started: a client hanging up then ends it normally (200, not 499)."""
