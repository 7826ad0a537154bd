"""Shared fixtures: a real emulator on 127.0.0.1 (port 0) and official Secret Manager clients bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
    SecretManagerServiceGrpcTransport,
)

from agent.emulator.options import EmulatorOptions
from agent.emulator.server import EmulatorEndpoints, running_emulator


@pytest.fixture
def emulator() -> Iterator[EmulatorEndpoints]:
    """A fresh emulator (empty store, no faults) for one test."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        yield endpoints


def grpc_client(target: str) -> secretmanager_v1.SecretManagerServiceClient:
    """The official sync client over plaintext gRPC, as a user pointing at the emulator would build it."""
    transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(target))
    return secretmanager_v1.SecretManagerServiceClient(transport=transport)


def rest_client(base_url: str) -> secretmanager_v1.SecretManagerServiceClient:
    """The official sync client over REST/JSON (``transport="rest"``) against the emulator's HTTP port."""
    return secretmanager_v1.SecretManagerServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=base_url),
    )


def async_client(target: str) -> secretmanager_v1.SecretManagerServiceAsyncClient:
    """The official asyncio client over plaintext gRPC (grpc_asyncio)."""
    transport = SecretManagerServiceGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(target))
    return secretmanager_v1.SecretManagerServiceAsyncClient(transport=transport)


@pytest.fixture
def client(emulator: EmulatorEndpoints) -> Iterator[secretmanager_v1.SecretManagerServiceClient]:
    c = grpc_client(emulator.grpc_target)
    yield c
    c.transport.close()


@pytest.fixture
def rest(emulator: EmulatorEndpoints) -> Iterator[secretmanager_v1.SecretManagerServiceClient]:
    c = rest_client(emulator.rest_url)
    yield c
    c.transport.close()


@pytest.fixture
async def aclient(
    emulator: EmulatorEndpoints,
) -> AsyncIterator[secretmanager_v1.SecretManagerServiceAsyncClient]:
    c = async_client(emulator.grpc_target)
    yield c
    await c.transport.close()
