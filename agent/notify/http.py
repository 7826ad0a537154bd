"""Telling the app over HTTP: a JSON POST of the new versions to a URL whose password is never logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from agent.core.retry import Backoff
from agent.errors import NotifyError
from agent.notify.base import EVENT_NAME

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: those may carry tokens and must not be logged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpNotifier:
    """POSTs ``{"event": "secrets-rotated", "versions": {...}}`` as JSON to ``url``.

    Each attempt is bounded by ``timeout`` seconds. A non-2xx answer (redirects are not followed) or a
    connection error is retried up to ``retries`` more times with full-jitter ``backoff``; after that,
    NotifyError names the URL (without user info or query) and the last status.
    """

    name = "http"

    def __init__(
        self, url: str, timeout: float = 5.0, retries: int = 2, *, backoff: Backoff | None = None
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff(initial=0.5, maximum=5.0)
        self._shown_url = redact_url(url)

    async def notify(self, versions: Mapping[str, str]) -> None:
        """POST the versions; NotifyError after ``1 + retries`` failed attempts."""
        body = {"event": EVENT_NAME, "versions": dict(versions)}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        outcome = ""
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "secrets-agent"}) as session:
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(self.backoff.delay(attempt - 1))
                outcome = await self._attempt(session, body)
                if not outcome:
                    log.info("POST %s accepted the rotation notice", self._shown_url)
                    return
                if attempt < self.retries:
                    log.warning("POST %s failed (%s); retrying", self._shown_url, outcome)
        attempts = self.retries + 1
        raise NotifyError(
            f"POST {self._shown_url} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {outcome}"
        )

    async def _attempt(self, session: aiohttp.ClientSession, body: object) -> str:
        """'' on success, else a short description of what went wrong (status or error kind)."""
        try:
            async with session.post(self.url, json=body, allow_redirects=False) as response:
                # Read (and drop) the body so the connection is released cleanly; it is never logged,
                # since an app might echo what it was sent or something else we have no business printing.
                await response.read()
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except aiohttp.ClientConnectorError as error:
            return f"cannot connect ({error.os_error.strerror or type(error.os_error).__name__})"
        except aiohttp.ClientError as error:
            return type(error).__name__
