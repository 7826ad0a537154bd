"""Google Cloud Secret Manager as a source, through the official asyncio client.

Two ways to reach the service:

* ``endpoint`` given (``host:port``, from ``--endpoint`` or ``SECRET_MANAGER_EMULATOR_HOST``): plaintext gRPC
  without credentials, for the emulator. One channel serves global and regional secrets alike.
* otherwise Application Default Credentials (Workload Identity on GKE, ``gcloud auth application-default
  login`` locally), one client per location: global secrets use ``secretmanager.googleapis.com``, regional
  ones ``secretmanager.<location>.rep.googleapis.com`` as the service requires.

Every call has a timeout and runs with the client's retry switched off: retrying is ``agent.core.retry``'s
job, so each attempt is seen and counted, and no hidden retry stretches a deadline. Every payload's
``data_crc32c`` is verified. Errors are translated by ``agent.sources.errors.translate`` only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import google.auth
import grpc
from google.api_core.client_options import ClientOptions
from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient, SecretPayload, SecretVersion
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)

from agent.config import SecretSpec
from agent.config.refs import SecretRef
from agent.core.model import Fetched, crc32c
from agent.errors import PermanentSourceError, TransientSourceError
from agent.sources.errors import TRANSLATABLE, hint_for, translate

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GLOBAL_ENDPOINT = "secretmanager.googleapis.com"
REGIONAL_ENDPOINT = "secretmanager.{location}.rep.googleapis.com"
EMULATOR_HOST_ENV = "SECRET_MANAGER_EMULATOR_HOST"
"""Environment variable naming the emulator's ``host:port``; the app reads it and passes ``endpoint``."""

# The gRPC deadline should fire first; this outer bound only catches a stall outside the call itself
# (a credentials plugin hanging on a token refresh), so the agent never waits forever.
OUTER_TIMEOUT_GRACE = 1.0


class GcpSource:
    """Secret values from Secret Manager. Create and use it inside one running event loop."""

    name = "gcp"

    def __init__(self, endpoint: str | None = None, call_timeout: float = 10.0) -> None:
        if call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive, got {call_timeout}")
        self.endpoint = endpoint or None
        """``host:port`` of a plaintext gRPC endpoint (the emulator), or ``None`` for Google with ADC."""
        self.call_timeout = call_timeout
        """Seconds each call may take."""
        # Key: location for ADC (None = global); always None with an endpoint, which serves every location.
        self._clients: dict[str | None, SecretManagerServiceAsyncClient] = {}
        self._credentials: Any = None
        # A permanent credentials failure (none found) is remembered: asking again would only repeat the
        # slow metadata-server probe for every secret.
        self._credentials_failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self.resolved_secret_names: dict[str, str] = {}
        """Canonical secret name (``projects/my-project/secrets/S``) -> the name the service returned for it
        (``projects/123456/secrets/S``: Secret Manager answers with the project NUMBER). Pub/Sub events name
        secrets the service's way, so the events feed matches both."""

    async def fetch(self, spec: SecretSpec) -> Fetched:
        """AccessSecretVersion of ``spec.ref``, checksum verified; the version number is the resolved one."""
        ref = str(spec.ref)
        client = await self._client_for(spec.ref)
        try:
            async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                response = await client.access_secret_version(
                    request={"name": ref}, retry=None, timeout=self.call_timeout
                )
        except TRANSLATABLE as error:
            raise translate(error, ref) from error
        payload = response.payload
        data = bytes(payload.data)
        checksum = crc32c(data)
        problem = payload_problem(payload, checksum)
        if problem is not None:
            raise TransientSourceError(
                f"{ref}: DATA_LOSS: payload {problem}",
                code="DATA_LOSS",
                ref=ref,
                hint=hint_for("DATA_LOSS"),
            )
        self.resolved_secret_names[spec.ref.secret_name] = response.name.rsplit("/versions/", 1)[0]
        return Fetched(name=spec.name, version=version_of(response.name), data=data, crc32c=checksum)

    async def current_version(self, spec: SecretSpec) -> str:
        """GetSecretVersion of ``spec.ref`` (metadata only: no payload, counted against the read quota).

        A version that is not ENABLED raises ``PermanentSourceError`` FAILED_PRECONDITION, as access would.
        """
        ref = str(spec.ref)
        client = await self._client_for(spec.ref)
        try:
            async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                version = await client.get_secret_version(
                    request={"name": ref}, retry=None, timeout=self.call_timeout
                )
        except TRANSLATABLE as error:
            raise translate(error, ref) from error
        number = version_of(version.name)
        if version.state != SecretVersion.State.ENABLED:
            state = SecretVersion.State(version.state).name
            raise PermanentSourceError(
                f"{ref}: FAILED_PRECONDITION: version {number} is in {state} state",
                code="FAILED_PRECONDITION",
                ref=ref,
                hint=hint_for("FAILED_PRECONDITION"),
            )
        return number

    async def close(self) -> None:
        """Close every channel; the source is not used afterwards."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.transport.close()  # type: ignore[no-untyped-call]

    async def _client_for(self, ref: SecretRef) -> SecretManagerServiceAsyncClient:
        key = None if self.endpoint is not None else ref.location
        client = self._clients.get(key)
        if client is not None:
            return client
        # One client per key even when a bootstrap asks for 32 secrets at once.
        async with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = await self._new_client(key, str(ref))
                self._clients[key] = client
            return client

    async def _new_client(self, location: str | None, ref: str) -> SecretManagerServiceAsyncClient:
        # grpc.aio channels bind to the running loop, so clients are only ever built in here.
        if self.endpoint is not None:
            return emulator_client(self.endpoint)
        credentials = await self._application_default_credentials(ref)
        api_endpoint = GLOBAL_ENDPOINT if location is None else REGIONAL_ENDPOINT.format(location=location)
        return SecretManagerServiceAsyncClient(
            credentials=credentials, client_options=ClientOptions(api_endpoint=api_endpoint)
        )

    async def _application_default_credentials(self, ref: str) -> Any:
        if self._credentials_failure is not None:
            raise translate(self._credentials_failure, ref) from self._credentials_failure
        if self._credentials is None:
            try:
                # google.auth.default() may probe the metadata server (blocking, with retries): off the loop.
                self._credentials, _ = await asyncio.to_thread(
                    google.auth.default, scopes=[CLOUD_PLATFORM_SCOPE]
                )
            except TRANSLATABLE as error:
                translated = translate(error, ref)
                if isinstance(translated, PermanentSourceError):
                    self._credentials_failure = error
                raise translated from error
        return self._credentials


def emulator_client(endpoint: str) -> SecretManagerServiceAsyncClient:
    """A client talking plaintext gRPC to the emulator at ``endpoint``; only inside a running loop."""
    channel = grpc.aio.insecure_channel(endpoint)
    return SecretManagerServiceAsyncClient(
        transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
    )


def payload_problem(payload: SecretPayload, checksum: int) -> str | None:
    """Why ``payload`` (whose data has CRC32C ``checksum``) is not to be trusted, or None."""
    # proto3 `optional`: presence is tested with `in`; 0 is a valid checksum.
    if "data_crc32c" not in payload:
        return "carries no data_crc32c"
    if payload.data_crc32c != checksum:
        return "data_crc32c mismatch"
    return None


def version_of(version_name: str) -> str:
    """``projects/p/secrets/s/versions/3`` -> ``"3"``."""
    return version_name.rsplit("/versions/", 1)[-1]
