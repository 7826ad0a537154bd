"""The webhook's listings on Secret Manager: ListSecrets made by the agent's own source
(``agent.sources.gcp.GcpSource.list_secrets``: every page, each call with a timeout, errors translated
once) on an event loop of their own, in one thread, never on the loop that answers ``/mutate`` and
``/healthz``. Only imported when ``--resolve-selections`` is on: the Google client is loaded then.

The webhook lists as itself: Application Default Credentials of its pod (Workload Identity on GKE), which
need ``secretmanager.secrets.list`` (``roles/secretmanager.viewer``) on the projects its pods select from.
A loopback ``endpoint`` is the emulator, spoken to over plaintext without credentials, as the agent's
``gcp.endpoint``; any other endpoint (a private one) gets TLS and the webhook's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

from agent.config import is_loopback, split_listen
from agent.sources.gcp import GcpSource
from agent.sources.identity_model import IdentitySettings
from agent.sources.selection import SecretListing
from agent.webhook.listings import ListingKey

CALL_TIMEOUT = 10.0
"""Seconds each ListSecrets call may take. A review waits ``--listing-timeout`` at most; a longer listing
goes on and fills the cache for the pods after it."""


class SecretManagerLister:
    """``lister(key)`` -> the future of that key's listing, made on the lister's own thread."""

    def __init__(self, endpoint: str | None = None, call_timeout: float = CALL_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.call_timeout = call_timeout
        self._source: GcpSource | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-listings", daemon=True)
        self._thread.start()

    def __call__(self, key: ListingKey) -> Future[tuple[SecretListing, ...]]:
        return asyncio.run_coroutine_threadsafe(self._list(key), self._loop)

    async def _list(self, key: ListingKey) -> tuple[SecretListing, ...]:
        if self._source is None:  # grpc.aio channels bind to the loop they are made on: this one
            self._source = GcpSource(self.endpoint, self.call_timeout, identity_for(self.endpoint))
        project, location, filter = key
        return tuple(await self._source.list_secrets(project, location, filter))

    def close(self) -> None:
        """Close the channels and stop the thread; listings in flight fail."""
        if self._loop.is_closed():
            return
        if self._source is not None:
            closing = asyncio.run_coroutine_threadsafe(self._source.close(), self._loop)
            with contextlib.suppress(Exception):  # closing at exit: nothing left to tell
                closing.result(5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()


def identity_for(endpoint: str | None) -> IdentitySettings:
    """Google, or a private endpoint: the webhook's credentials (over TLS to a non-loopback endpoint); a
    loopback endpoint: the plaintext emulator, no credentials."""
    if endpoint is None:
        return IdentitySettings()
    host, _ = split_listen(endpoint)
    if is_loopback(host):
        return IdentitySettings()
    return IdentitySettings(endpoint_credentials=True, endpoint_tls=True)


__all__ = ["CALL_TIMEOUT", "SecretManagerLister", "identity_for"]
