"""Google Cloud Secret Manager as a source, through the official asyncio client.

Two ways to reach the service:

* ``endpoint`` given (``host:port``, from ``--endpoint`` or ``SECRET_MANAGER_EMULATOR_HOST``): the emulator.
  One channel per identity serves global and regional secrets alike: plaintext gRPC without credentials, or
  when credentials go there too (``IdentitySettings.endpoint_credentials``) gRPC local credentials on
  loopback (which let call credentials travel over plaintext) or TLS, with google-auth's metadata plugin.
* otherwise Google, one client per location and identity: global secrets use
  ``secretmanager.googleapis.com``, regional ones ``secretmanager.<location>.rep.googleapis.com`` as the
  service requires.

Who the agent is (``agent.sources.identity``): Application Default Credentials (Workload Identity on GKE,
``gcloud auth application-default login`` locally), or ``gcp.credentials_file`` (Workload Identity
Federation off GKE, a key), optionally impersonating a service account, for every secret or for one; with
``gcp.quota_project`` as ``x-goog-user-project``. Clients are keyed by (location, identity): one per
distinct identity, never one per secret. Before a call, the identity's token is refreshed when google-auth
says it is stale, off the event loop (``Principal.fresh``), so a failure to get one is reported as what it
is (the token exchange refused the subject token, the impersonation was denied) instead of as the opaque
status gRPC gives a failed credentials plugin.

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
import dataclasses
from dataclasses import dataclass
from typing import Any

import grpc
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
from agent.errors import PermanentSourceError, SourceError, TransientSourceError
from agent.sources.errors import TRANSLATABLE, hint_for, translate
from agent.sources.identity import CLOUD_PLATFORM_SCOPE as CLOUD_PLATFORM_SCOPE  # the Python API's too
from agent.sources.identity import Principal, base_credentials, carries_quota_project, identity_credentials
from agent.sources.identity_errors import explain_call_error, identity_error
from agent.sources.identity_model import CredentialFile, Identity, IdentitySettings, read_credential_file
from agent.sources.selection import SecretListing

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
_LIST_REQUEST = service.ListSecretsRequest.pb()
_LIST_RESPONSE = service.ListSecretsResponse.pb()
LIST_PAGE_SIZE = 25_000
"""Secrets asked per ListSecrets page: the service's cap, so a project costs one read call per 25,000."""
MAX_LIST_PAGES = 400
"""Most pages one listing follows (10 million secrets): a service that kept answering with a next page
token would otherwise hold the listing forever."""
_VERSION = SecretVersion.pb()
_ENABLED = int(SecretVersion.State.ENABLED)
Metadata = tuple[tuple[str, str], ...]
# As the official transport sets them: a secret may be up to 64 KiB, a response a little more.
_CHANNEL_OPTIONS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))


_Key = tuple[str | None, Identity | None]
"""What one client serves: (location, identity). The location is None for global secrets and for every
secret of an endpoint (which serves them all); the identity None when no credentials are sent."""


@dataclass(frozen=True)
class _Calls:
    """The two methods the agent calls, on one official client's channel (protobuf in, protobuf out)."""

    client: SecretManagerServiceAsyncClient
    access: Any
    """AccessSecretVersion, a ``grpc.aio.UnaryUnaryMultiCallable``."""
    get: Any
    """GetSecretVersion, likewise."""
    list: Any = None
    """ListSecrets, likewise (``agent.sources.listing``: selections)."""
    principal: Principal | None = None
    """The identity whose credentials the channel carries (refreshed before calls), or None."""
    extra: Metadata = ()
    """Metadata added to every call: ``x-goog-user-project`` when no credentials carry it."""

    @classmethod
    def of(
        cls, client: SecretManagerServiceAsyncClient, principal: Principal | None = None, extra: Metadata = ()
    ) -> _Calls:
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
        listing = channel.unary_unary(
            f"{_SERVICE}/ListSecrets",
            request_serializer=_LIST_REQUEST.SerializeToString,
            response_deserializer=_LIST_RESPONSE.FromString,
        )
        return cls(client, access, get, listing, principal, extra)


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

    def __init__(
        self,
        endpoint: str | None = None,
        call_timeout: float = 10.0,
        identity: IdentitySettings | None = None,
    ) -> None:
        if call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive, got {call_timeout}")
        self.endpoint = endpoint or None
        """``host:port`` of the emulator (or another endpoint), or ``None`` for Google."""
        self.call_timeout = call_timeout
        """Seconds each call may take."""
        self.identity = identity if identity is not None else IdentitySettings()
        """Who the agent is: credentials, impersonation, quota project, whether credentials go to
        ``endpoint``. Default: Application Default Credentials, none to an endpoint."""
        # Credentials are used with Google, and with an endpoint only when the settings say so.
        self._authenticated = self.endpoint is None or self.identity.endpoint_credentials
        self._base_identity = self.identity.base
        self._calls: dict[_Key, _Calls] = {}
        self._principals: dict[Identity, Principal] = {}
        self._prepared: dict[SecretRef, _Prepared] = {}
        self._credentials: Any = None
        self._credential_file: CredentialFile | None = None
        # A permanent credentials failure (none found, an unusable file) is remembered: asking again would
        # only repeat the slow metadata-server probe for every secret.
        self._credentials_failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self.resolved_secret_names: dict[str, str] = {}
        """Canonical secret name (``projects/my-project/secrets/S``) -> the name the service returned for it
        (``projects/123456/secrets/S``: Secret Manager answers with the project NUMBER). Pub/Sub events name
        secrets the service's way, so the events feed matches both."""
        self.listed_projects: dict[str, str] = {}
        """Project as a listing named it (``my-project``) -> as the service's answer named it (``123456``),
        when they differ: learned by ``list_secrets``, for the events of selected secrets."""

    async def fetch(self, spec: SecretSpec) -> Fetched:
        """AccessSecretVersion of ``spec.ref``, checksum verified; the version number is the resolved one."""
        ref = spec.ref
        prepared = self._prepared.get(ref) or self._prepare(ref)
        key = self.key_of(spec)
        calls = self._calls.get(key) or await self._calls_for(key, prepared.name)
        if calls.principal is not None:
            await calls.principal.fresh(prepared.name)
        try:
            async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                response = await calls.access(
                    _ACCESS_REQUEST(name=prepared.name),
                    timeout=self.call_timeout,
                    metadata=prepared.metadata + calls.extra if calls.extra else prepared.metadata,
                )
        except TRANSLATABLE as error:
            raise self._call_error(error, prepared.name, calls) from error
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
        key = self.key_of(spec)
        calls = self._calls.get(key) or await self._calls_for(key, prepared.name)
        if calls.principal is not None:
            await calls.principal.fresh(prepared.name)
        try:
            async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                version = await calls.get(
                    _GET_REQUEST(name=prepared.name),
                    timeout=self.call_timeout,
                    metadata=prepared.metadata + calls.extra if calls.extra else prepared.metadata,
                )
        except TRANSLATABLE as error:
            raise self._call_error(error, prepared.name, calls) from error
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

    async def list_secrets(
        self,
        project: str,
        location: str | None = None,
        filter: str = "",
        *,
        impersonate: str | None = None,
        delegates: tuple[str, ...] = (),
    ) -> list[SecretListing]:
        """ListSecrets of ``projects/<project>[/locations/<location>]`` with ``filter`` (Google's list-filter
        syntax, see ``agent.sources.selection.server_filter``), every page followed (``LIST_PAGE_SIZE`` per
        call, each call counted against the project's READ quota), as ``impersonate`` (with ``delegates``)
        or the agent's identity. Each listing names the project as ``project`` does, whatever the service
        answers with (its project number). Regional secrets are listed at their location's endpoint.
        Raises SourceError (``agent.sources.errors.translate``: RESOURCE_EXHAUSTED is transient)."""
        parent = f"projects/{project}" + (f"/locations/{location}" if location else "")
        identity: Identity | None = None
        if self._authenticated:
            identity = (
                Identity(self.identity.credentials_file, impersonate, tuple(delegates))
                if impersonate is not None
                else self._base_identity
            )
        key: _Key = (None if self.endpoint is not None else location or None, identity)
        calls = self._calls.get(key) or await self._calls_for(key, parent)
        client_header = DEFAULT_CLIENT_INFO.to_grpc_metadata()  # type: ignore[no-untyped-call]
        routing = routing_header.to_grpc_metadata((("parent", parent),))  # type: ignore[no-untyped-call]
        metadata: Metadata = (client_header, routing, *calls.extra)
        found: list[SecretListing] = []
        token = ""
        for _ in range(MAX_LIST_PAGES):
            if calls.principal is not None:
                await calls.principal.fresh(parent)
            request = _LIST_REQUEST(parent=parent, filter=filter, page_size=LIST_PAGE_SIZE, page_token=token)
            try:
                async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                    response = await calls.list(request, timeout=self.call_timeout, metadata=metadata)
            except TRANSLATABLE as error:
                raise self._call_error(error, parent, calls) from error
            for secret in response.secrets:
                listing = SecretListing.from_name(secret.name, dict(secret.labels))
                if listing is None or (listing.location or None) != (location or None):
                    continue  # not a secret of this parent: nothing a selection could take
                if listing.project != project:
                    self.listed_projects[project] = listing.project
                found.append(dataclasses.replace(listing, project=project))
            token = response.next_page_token
            if not token:
                return found
        raise TransientSourceError(
            f"{parent}: ABORTED: the listing did not end after {MAX_LIST_PAGES} pages",
            code="ABORTED",
            ref=parent,
            hint=hint_for("ABORTED"),
        )

    async def close(self) -> None:
        """Close every channel; the source is not used afterwards."""
        calls, self._calls = list(self._calls.values()), {}
        for each in calls:
            await each.client.transport.close()  # type: ignore[no-untyped-call]

    def client_keys(self) -> list[_Key]:
        """The (location, identity) of every client built so far (one per distinct pair, never per secret)."""
        return list(self._calls)

    def key_of(self, spec: SecretSpec) -> _Key:
        """The (location, identity) of the client that serves ``spec``."""
        identity = self.identity.of(spec, self._base_identity) if self._authenticated else None
        return (None if self.endpoint is not None else spec.ref.location, identity)

    def _prepare(self, ref: SecretRef) -> _Prepared:
        # One entry per configured reference: the set is fixed by the configuration.
        prepared = self._prepared[ref] = _Prepared.of(ref)
        return prepared

    def _call_error(self, error: BaseException, ref: str, calls: _Calls) -> SourceError:
        translated = translate(error, ref)
        if calls.principal is None and self.identity.quota_project is None:
            return translated
        return explain_call_error(translated, calls.principal, self.identity.quota_project)

    async def _calls_for(self, key: _Key, ref: str) -> _Calls:
        # One client per key even when a bootstrap asks for every secret at once.
        async with self._lock:
            calls = self._calls.get(key)
            if calls is None:
                location, identity = key
                principal = None if identity is None else await self._principal(identity, ref)
                calls = self._calls[key] = _Calls.of(
                    self._new_client(location, principal), principal, self._extra_metadata(principal)
                )
            return calls

    def _extra_metadata(self, principal: Principal | None) -> Metadata:
        quota = self.identity.quota_project
        if quota is None or (principal is not None and carries_quota_project(principal.credentials)):
            return ()
        # No credentials to carry it (a plain emulator, or credentials that cannot): the header itself.
        return (("x-goog-user-project", quota),)

    def _new_client(
        self, location: str | None, principal: Principal | None
    ) -> SecretManagerServiceAsyncClient:
        # grpc.aio channels bind to the running loop, so clients are only ever built in here.
        if self.endpoint is not None:
            if principal is None and not self.identity.endpoint_tls:
                return emulator_client(self.endpoint)
            return endpoint_client(
                self.endpoint,
                None if principal is None else principal.credentials,
                None if principal is None else principal.request,
                tls=self.identity.endpoint_tls,
            )
        assert principal is not None  # Google is always called with credentials (_key)
        api_endpoint = GLOBAL_ENDPOINT if location is None else REGIONAL_ENDPOINT.format(location=location)
        return google_client(api_endpoint, principal.credentials)

    async def _principal(self, identity: Identity, ref: str) -> Principal:
        principal = self._principals.get(identity)
        if principal is not None:
            return principal
        base = await self._base_credentials(ref)
        quota, file = self.identity.quota_project, self._credential_file
        try:
            # One credentials object per identity, built on the one base (no network: tokens come later).
            credentials = identity_credentials(self.identity, identity, base)
        except TRANSLATABLE as error:
            raise identity_error(error, ref, identity, file, quota) from error
        principal = self._principals[identity] = Principal(
            identity, credentials, file=file, quota_project=quota, timeout=self.call_timeout
        )
        return principal

    async def _base_credentials(self, ref: str) -> Any:
        if self._credentials_failure is not None:
            raise self._base_failure(self._credentials_failure, ref) from self._credentials_failure
        if self._credentials is None:
            try:
                # google.auth.default() may probe the metadata server (blocking, with retries): off the loop.
                self._credentials, self._credential_file = await asyncio.to_thread(
                    base_credentials, self.identity
                )
            except TRANSLATABLE as error:
                translated = self._base_failure(error, ref)
                if isinstance(translated, PermanentSourceError):
                    self._credentials_failure = error
                raise translated from error
        return self._credentials

    def _base_failure(self, error: BaseException, ref: str) -> SourceError:
        if self.identity.credentials_file is None:
            return translate(error, ref)
        # Named as the base identity, with what could be read of the file.
        file = read_credential_file(self.identity.credentials_file)
        return identity_error(error, ref, self._base_identity, file, self.identity.quota_project)


def emulator_client(endpoint: str) -> SecretManagerServiceAsyncClient:
    """A client talking plaintext gRPC to the emulator at ``endpoint``; only inside a running loop."""
    channel = grpc.aio.insecure_channel(endpoint)
    return SecretManagerServiceAsyncClient(
        transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
    )


def endpoint_client(
    endpoint: str,
    credentials: Any,
    request: Any,
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
) -> SecretManagerServiceAsyncClient:
    """A client of the endpoint at ``endpoint`` that sends ``credentials`` (google-auth's, refreshed with
    ``request``) with every call, as Google's own channels do; only inside a running loop.

    Plaintext is gRPC local credentials, which connect to loopback addresses only and let call credentials
    through (gRPC refuses to send them over an insecure channel); ``tls`` checks the server's certificate
    against ``root_certificates`` (PEM), else the system's roots. ``credentials`` None: TLS alone.
    """
    from google.auth.transport.grpc import AuthMetadataPlugin

    channel_credentials = (
        grpc.ssl_channel_credentials(root_certificates=root_certificates)
        if tls
        else grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    if credentials is not None:
        channel_credentials = grpc.composite_channel_credentials(
            channel_credentials,
            grpc.metadata_call_credentials(
                AuthMetadataPlugin(credentials, request)  # type: ignore[no-untyped-call]
            ),
        )
    channel = grpc.aio.secure_channel(endpoint, channel_credentials, options=_CHANNEL_OPTIONS)
    return SecretManagerServiceAsyncClient(
        transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel)
    )


def google_client(
    api_endpoint: str, credentials: Any, ssl_credentials: grpc.ChannelCredentials | None = None
) -> SecretManagerServiceAsyncClient:
    """A client of Google's ``api_endpoint`` whose channel carries exactly ``credentials``: the official
    transport builds it (TLS, google-auth's metadata plugin) and, given credentials that are already scoped
    and carry their quota project, uses that very object, so ``Principal.fresh`` refreshes the token the
    channel sends. (The client would copy service account credentials to switch on self-signed JWTs.)
    ``ssl_credentials``: other roots than the system's (tests)."""
    transport = SecretManagerServiceGrpcAsyncIOTransport(
        host=api_endpoint, credentials=credentials, ssl_channel_credentials=ssl_credentials
    )
    return SecretManagerServiceAsyncClient(transport=transport)


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
