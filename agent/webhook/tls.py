"""The webhook's TLS certificate, reloaded when its files change (cert-manager renews it in place).

The listening socket keeps one ``SSLContext`` for its whole life; its SNI callback hands each new
connection the newest context, which is built fresh from the files whenever they change. Connections
already open keep the certificate they started with. A pair that does not load (a half-written renewal,
a key that does not match) keeps the previous certificate in service and is retried at the next check.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from pathlib import Path

from agent.errors import AgentError
from agent.observe.logs import fields

log = logging.getLogger(__name__)

_Stamp = bytes


class CertificateError(AgentError):
    """The certificate or key cannot be loaded at start."""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the pair; raises OSError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _stamp(*files: Path) -> _Stamp | None:
    """A digest of the files' contents (None while one cannot be read). Contents, not stat(): an in-place
    rewrite within one timestamp tick, or with the same size, is still a change; and the files are small."""
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    except OSError:
        return None
    return digest.digest()


class ReloadingCertificate:
    """The listener's SSLContext (``context``), serving the newest loadable certificate."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._stamp = _stamp(cert_file, key_file)
        self._failed: _Stamp | None = None
        try:
            self.context = server_context(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise CertificateError(
                f"cannot load the TLS certificate {cert_file} and key {key_file}: {_reason(error)}"
            ) from None
        self._current = self.context
        self.context.sni_callback = self._select
        self.reloads = 0
        """How many times a new certificate was taken into service."""

    def _select(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        # Called for every handshake (with or without SNI) before the certificate is chosen.
        if self._current is not context:
            connection.context = self._current

    def check(self) -> bool:
        """Reload when the files changed; True when a new certificate went into service."""
        stamp = _stamp(self.cert_file, self.key_file)
        if stamp is None or stamp == self._stamp or stamp == self._failed:
            return False
        try:
            fresh = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            self._failed = stamp  # one warning per distinct broken state, not one per check
            log.warning(
                "TLS certificate files changed but do not load; still serving the previous certificate",
                extra=fields(
                    cert_file=str(self.cert_file), key_file=str(self.key_file), error=_reason(error)
                ),
            )
            return False
        self._current, self._stamp, self._failed = fresh, stamp, None
        self.reloads += 1
        log.info("TLS certificate reloaded", extra=fields(cert_file=str(self.cert_file)))
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()


def _reason(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or type(error).__name__
    return error.strerror or type(error).__name__
