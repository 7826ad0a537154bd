"""A real webhook over HTTPS on 127.0.0.1 (port 0) with trustme certificates, and a client that trusts
only the test CA, as kube-apiserver trusts only the caBundle."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.abc import ResolveResult

from agent.webhook.listings import Resolver
from agent.webhook.server import build_app, serve
from agent.webhook.settings import InjectorSettings
from agent.webhook.tls import ReloadingCertificate

SERVICE_NAME = "secrets-agent-webhook.secrets-agent.svc"
"""The name the API server connects to (the Service DNS name in the certificate)."""


@dataclass
class Tls:
    ca: trustme.CA
    cert_file: Path
    key_file: Path

    def issue(self, ca: trustme.CA | None = None) -> bytes:
        """A new certificate for the service written over the files (each atomically, as the kubelet
        swaps a Secret volume); returns its DER form, which a client can compare with what it was served."""
        leaf = (ca or self.ca).issue_cert(SERVICE_NAME, "127.0.0.1")
        for path, blob in ((self.key_file, leaf.private_key_pem), (self.cert_file, leaf.cert_chain_pems[0])):
            temp = path.with_suffix(".tmp")
            blob.write_to_path(str(temp))
            os.replace(temp, path)
        return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    files = Tls(trustme.CA(), tmp_path / "tls.crt", tmp_path / "tls.key")
    files.issue()
    return files


@dataclass
class Webhook:
    url: str
    port: int
    certificate: ReloadingCertificate
    session: aiohttp.ClientSession
    tls: Tls

    async def post(self, body: bytes | str | dict[str, Any], **headers: str) -> tuple[int, Any]:
        data = json.dumps(body) if isinstance(body, dict) else body
        async with self.session.post(
            self.url + "/mutate", data=data, headers={"Content-Type": "application/json", **headers}
        ) as response:
            return response.status, await response.json()

    async def served_certificate(self) -> bytes:
        """The DER certificate a NEW connection is served (verified against the test CA)."""
        _, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.tls.client_context(), server_hostname=SERVICE_NAME
        )
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert isinstance(der, bytes)
            return der
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture
def injector_settings() -> InjectorSettings:
    return InjectorSettings()


@pytest.fixture
def resolver() -> Resolver | None:
    """Where the webhook resolves selections (tests/webhook/test_selection_resolution.py gives a
    ListingCache on the emulator); None: it does not."""
    return None


@pytest.fixture
async def webhook(
    tls: Tls, injector_settings: InjectorSettings, resolver: Resolver | None
) -> AsyncIterator[Webhook]:
    certificate = ReloadingCertificate(tls.cert_file, tls.key_file)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(build_app(injector_settings, resolver), "127.0.0.1", 0, certificate, started=bound.set_result)
    )
    port = await asyncio.wait_for(bound, 10)
    # The API server connects by the Service's DNS name; resolve that name to the test server.
    names = _FixedResolver(SERVICE_NAME, "127.0.0.1")
    connector = aiohttp.TCPConnector(ssl=tls.client_context(), resolver=names, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Webhook(f"https://{SERVICE_NAME}:{port}", port, certificate, session, tls)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class _FixedResolver(aiohttp.abc.AbstractResolver):
    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        assert host == self.name
        return [
            ResolveResult(
                hostname=host, host=self.address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None
