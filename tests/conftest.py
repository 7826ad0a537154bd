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

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from testing.pubsub_emulator import (
    PubSubChannel,
    PubSubEmulatorUnavailable,
    open_channel,
    start_pubsub_emulator,
)


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
        credentials=AnonymousCredentials(),
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


# --- Pub/Sub: the official emulator (Google Cloud SDK, Java), started once per session ----------------------


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """The official Pub/Sub emulator on 127.0.0.1, shared by the session (the JVM start is paid once).

    Yields ``"127.0.0.1:PORT"``, the value for PUBSUB_EMULATOR_HOST. Fails (never skips) when Java or the
    SDK's pubsub-emulator component is missing, saying what to install.
    """
    try:
        emulator = start_pubsub_emulator()
    except PubSubEmulatorUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield emulator.host_port
    finally:
        emulator.stop()


@pytest.fixture
def pubsub(pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubChannel]:
    """PUBSUB_EMULATOR_HOST set for this test; a new topic + pull subscription made with the official clients.

    Start anything that reads PUBSUB_EMULATOR_HOST (our emulator's publisher, the agent) *inside* the test.
    """
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    with open_channel(pubsub_emulator) as channel:
        yield channel
