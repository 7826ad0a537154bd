"""Google Cloud Secret Manager as a source, through the official asyncio client.

Two ways to reach the service:

* ``endpoint`` given (``host:port``, from ``--endpoint`` or ``SECRET_MANAGER_EMULATOR_HOST``): plaintext gRPC
  without credentials, for the emulator. One channel serves global and regional secrets alike.
* otherwise Application Default Credentials (Workload Identity on GKE, ``gcloud auth application-default
  login`` locally), one client per location: global secrets use ``secretmanager.googleapis.com``, regional
  ones ``secretmanager.<location>.rep.googleapis.com`` as the service requires.

Every call has a timeout and no client-side retry: retrying is ``agent.core.retry``'s job, so each attempt
is seen and counted, and no hidden retry stretches a deadline. Every payload's ``data_crc32c`` is verified.
Errors are translated by ``agent.sources.errors.translate`` only.

The official client builds the channel (endpoint, credentials, TLS, the client's interceptor); the two
calls the agent makes go straight to that channel, as plain protobuf messages, with the metadata the
client's method wrapper would add (``x-goog-api-client`` and the ``x-goog-request-params`` routing header),
prepared once per reference. Per call, the wrapper's layers (request coercion, routing header encoding,
the universe-domain check, retry and timeout decorators, a tracing span, the exception-mapping call wrapper,
proto-plus marshalling of the response) cost about a fifth of the client's CPU per call (55-65 of ~300 µs
with 50 calls in flight, ``bench/bootstrap.py``), paid one call after the other on one event loop. Our
endpoints are Google's own (``*.googleapis.com``), so the universe-domain check has nothing to catch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import google.auth
import grpc
from google.api_core.client_options import ClientOptions
from google.api_core.gapic_v1 import routing_header
from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient, SecretPayload, SecretVersion
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.base import (
    DEFAULT_CLIENT_INFO,
)
from google.cloud.secretmanager_v1.types import service

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

_SERVICE = "/google.cloud.secretmanager.v1.SecretManagerService"
_ACCESS_REQUEST = service.AccessSecretVersionRequest.pb()
_ACCESS_RESPONSE = service.AccessSecretVersionResponse.pb()
_GET_REQUEST = service.GetSecretVersionRequest.pb()
_VERSION = SecretVersion.pb()
_ENABLED = int(SecretVersion.State.ENABLED)
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Calls:
    """The two methods the agent calls, on one official client's channel (protobuf in, protobuf out)."""

    client: SecretManagerServiceAsyncClient
    access: Any
    """AccessSecretVersion, a ``grpc.aio.UnaryUnaryMultiCallable``."""
    get: Any
    """GetSecretVersion, likewise."""

    @classmethod
    def of(cls, client: SecretManagerServiceAsyncClient) -> _Calls:
        transport = client.transport
        if not isinstance(transport, SecretManagerServiceGrpcAsyncIOTransport):
            raise TypeError(f"expected the client's gRPC asyncio transport, got {type(transport).__name__}")
        channel = transport.grpc_channel
        access = channel.unary_unary(
            f"{_SERVICE}/AccessSecretVersion",
            request_serializer=_ACCESS_REQUEST.SerializeToString,
            response_deserializer=_ACCESS_RESPONSE.FromString,
        )
        get = channel.unary_unary(
            f"{_SERVICE}/GetSecretVersion",
            request_serializer=_GET_REQUEST.SerializeToString,
            response_deserializer=_VERSION.FromString,
        )
        return cls(client, access, get)


@dataclass(frozen=True)
class _Prepared:
    """What every call for one reference sends: its resource name and the metadata the client would add."""

    name: str
    metadata: Metadata

    @classmethod
    def of(cls, ref: SecretRef) -> _Prepared:
        name = str(ref)
        client_header = DEFAULT_CLIENT_INFO.to_grpc_metadata()  # type: ignore[no-untyped-call]
        routing = routing_header.to_grpc_metadata((("name", name),))  # type: ignore[no-untyped-call]
        return cls(name, (client_header, routing))


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
        self._calls: dict[str | None, _Calls] = {}
        self._prepared: dict[SecretRef, _Prepared] = {}
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
        ref = spec.ref
        prepared = self._prepared.get(ref) or self._prepare(ref)
        calls = self._calls.get(self._key(ref)) or await self._calls_for(ref)
        try:
            async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                response = await calls.access(
                    _ACCESS_REQUEST(name=prepared.name),
                    timeout=self.call_timeout,
                    metadata=prepared.metadata,
                )
        except TRANSLATABLE as error:
            raise translate(error, prepared.name) from error
        payload = response.payload
        data: bytes = payload.data
        checksum = crc32c(data)
        problem = checksum_problem(payload.HasField("data_crc32c"), payload.data_crc32c, checksum)
        if problem is not None:
            raise TransientSourceError(
                f"{prepared.name}: DATA_LOSS: payload {problem}",
                code="DATA_LOSS",
                ref=prepared.name,
                hint=hint_for("DATA_LOSS"),
            )
        version_name: str = response.name
        secret_name, _, version = version_name.rpartition("/versions/")
        self.resolved_secret_names[ref.secret_name] = secret_name
        return Fetched(name=spec.name, version=version, data=data, crc32c=checksum)

    async def current_version(self, spec: SecretSpec) -> str:
        """GetSecretVersion of ``spec.ref`` (metadata only: no payload, counted against the read quota).

        A version that is not ENABLED raises ``PermanentSourceError`` FAILED_PRECONDITION, as access would.
        """
        ref = spec.ref
        prepared = self._prepared.get(ref) or self._prepare(ref)
        calls = self._calls.get(self._key(ref)) or await self._calls_for(ref)
        try:
            async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                version = await calls.get(
                    _GET_REQUEST(name=prepared.name),
                    timeout=self.call_timeout,
                    metadata=prepared.metadata,
                )
        except TRANSLATABLE as error:
            raise translate(error, prepared.name) from error
        number = version_of(version.name)
        if version.state != _ENABLED:
            state = SecretVersion.State(version.state).name
            raise PermanentSourceError(
                f"{prepared.name}: FAILED_PRECONDITION: version {number} is in {state} state",
                code="FAILED_PRECONDITION",
                ref=prepared.name,
                hint=hint_for("FAILED_PRECONDITION"),
            )
        return number

    async def close(self) -> None:
        """Close every channel; the source is not used afterwards."""
        calls, self._calls = list(self._calls.values()), {}
        for each in calls:
            await each.client.transport.close()  # type: ignore[no-untyped-call]

    def _key(self, ref: SecretRef) -> str | None:
        return None if self.endpoint is not None else ref.location

    def _prepare(self, ref: SecretRef) -> _Prepared:
        # One entry per configured reference: the set is fixed by the configuration.
        prepared = self._prepared[ref] = _Prepared.of(ref)
        return prepared

    async def _calls_for(self, ref: SecretRef) -> _Calls:
        key = self._key(ref)
        # One client per key even when a bootstrap asks for every secret at once.
        async with self._lock:
            calls = self._calls.get(key)
            if calls is None:
                calls = self._calls[key] = _Calls.of(await self._new_client(key, str(ref)))
            return calls

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
    return checksum_problem("data_crc32c" in payload, payload.data_crc32c, checksum)


def checksum_problem(present: bool, declared: int, checksum: int) -> str | None:
    """Why a payload is not to be trusted (``data_crc32c`` ``present``, its ``declared`` value, the CRC32C
    ``checksum`` of the data received), or None."""
    if not present:
        return "carries no data_crc32c"
    if declared != checksum:
        return "data_crc32c mismatch"
    return None


def version_of(version_name: str) -> str:
    """``projects/p/secrets/s/versions/3`` -> ``"3"``."""
    return version_name.rsplit("/versions/", 1)[-1]
