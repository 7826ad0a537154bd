"""How a ``SecretManager`` reaches Secret Manager, and as whom: its client, its identity, its calls.

``identity_settings`` checks the identity arguments with the agent's loader (as for its ``gcp`` section).
A ``Connection`` builds the client on the first call, inside the running event loop (grpc.aio channels bind
to it): the emulator's plaintext channel, or one carrying the identity's credentials
(``agent.sources.identity``), with the project from Application Default Credentials when none was named.
It makes every call: a timeout each, the token refreshed before it when stale (off the loop), retries
where repeating is safe (``agent.core.retry``), failures as one-line ``SecretsError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import google.auth
from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient

from agent.config import is_loopback, split_listen
from agent.config.loader import read_identity_section
from agent.core.retry import Backoff, retry_transient
from agent.errors import ConfigError, Problem, SourceError, TransientSourceError
from agent.observe.logs import fields
from agent.secrets.common import secrets_error
from agent.secrets.environment import NO_PROJECT, quota_project_from
from agent.secrets.interface import SecretsError
from agent.sources.errors import TRANSLATABLE, translate
from agent.sources.gcp import (
    CLOUD_PLATFORM_SCOPE,
    GLOBAL_ENDPOINT,
    OUTER_TIMEOUT_GRACE,
    emulator_client,
    endpoint_client,
    google_client,
)
from agent.sources.identity import (
    CredentialFile,
    IdentitySettings,
    Principal,
    base_credentials,
    carries_quota_project,
    explain_call_error,
    identity_credentials,
    identity_error,
    read_credential_file,
)

T = TypeVar("T")

# The manager's calls are logged under the manager's name, the logger the API's users know.
log = logging.getLogger("agent.secrets.manager")

_ARGUMENTS = "SecretManager"
"""How problems with the identity arguments are named: ``SecretManager.impersonate_service_account``."""
Metadata = tuple[tuple[str, str], ...]


class Connection:
    """A manager's way to Secret Manager: the client (built on first use, in the running loop), the
    identity it calls as, and the call itself (timeout, fresh token, retries, errors).

    Args:
        project: The project secrets live in; None: from Application Default Credentials, at the first
            call.
        endpoint: ``HOST:PORT`` of a plaintext gRPC endpoint (the emulator), or None for Google.
        identity: Who the calls are made as (``identity_settings``).
        call_timeout: Seconds each call may take.
        max_attempts: Calls per operation at most, the first one included.
        backoff: The delay schedule between attempts (full jitter).
    """

    def __init__(
        self,
        project: str | None,
        endpoint: str | None,
        identity: IdentitySettings,
        *,
        call_timeout: float,
        max_attempts: int,
        backoff: Backoff,
    ) -> None:
        self.project = project
        """The project secrets live in; set from Application Default Credentials at the first call when
        None."""
        self.endpoint = endpoint
        self.identity = identity
        self.call_timeout = call_timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.metadata: Metadata = ()
        """Added to every call: ``x-goog-user-project`` when no credentials carry the quota project."""
        self._client: SecretManagerServiceAsyncClient | None = None
        self._lock: asyncio.Lock | None = None
        self._principal: Principal | None = None
        """The identity whose credentials the client's channel carries (refreshed before calls), or None."""

    async def client(self) -> SecretManagerServiceAsyncClient:
        """The client, built on the first call (in the running loop; the project is known after it)."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                self._client = await self._new_client()
            return self._client

    async def close(self) -> None:
        """Close the channel. The connection may be used again: the next call builds a new client."""
        client, self._client = self._client, None
        # The identity's lock belongs to this event loop; a later use (another loop) builds it again.
        self._principal, self.metadata = None, ()
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]

    async def call(
        self,
        secret_id: str,
        method: Callable[..., Awaitable[T]],
        request: Any,
        *,
        etag_sent: bool = False,
        reading_value: bool = False,
        idempotent: bool = False,
    ) -> T:
        """``method(request)`` of the client, through ``call_with``.

        Args:
            secret_id: The secret the call is about (``*`` for the project), for errors and logs.
            method: A method of ``client()``.
            request: Its request.
            etag_sent: The request carries an etag (FAILED_PRECONDITION or ABORTED is then
                ConcurrentModification).
            reading_value: The call reads a value (FAILED_PRECONDITION is then VersionNotEnabled).
            idempotent: Repeating it is safe after any transient failure, not only RESOURCE_EXHAUSTED.

        Returns:
            The method's response.

        Raises:
            SecretsError: The call failed (after the retries it allows).
        """

        async def once() -> T:
            return await method(
                request=request, retry=None, timeout=self.call_timeout, metadata=self.metadata
            )

        return await self.call_with(
            secret_id, once, etag_sent=etag_sent, reading_value=reading_value, idempotent=idempotent
        )

    async def call_with(
        self,
        secret_id: str,
        call: Callable[[], Awaitable[T]],
        *,
        etag_sent: bool = False,
        reading_value: bool = False,
        idempotent: bool = False,
    ) -> T:
        """``call()`` with a fresh token, a timeout and retries; the arguments are ``call``'s."""

        async def once() -> T:
            principal = self._principal
            if principal is not None:
                # A stale token is refreshed here, off the loop, so that a refused exchange or impersonation
                # is said as what it is, not as the opaque status of gRPC's failed credentials plugin.
                try:
                    await principal.fresh(secret_id)
                except SourceError as error:
                    raise _with_hint(error) from (error.__cause__ or error)
            try:
                async with asyncio.timeout(self.call_timeout + OUTER_TIMEOUT_GRACE):
                    return await call()
            except TRANSLATABLE as error:
                raise self._call_error(error, secret_id, principal) from error

        def repeatable(error: TransientSourceError) -> bool:
            # RESOURCE_EXHAUSTED is refused before anything happened; after any other failure a write may
            # have been done, and doing it again could (say) add the same version twice.
            return idempotent or error.code == "RESOURCE_EXHAUSTED"

        def retrying(error: TransientSourceError, attempt: int, delay: float) -> None:
            log.info(
                "secrets api: %s on %s, retrying in %.1fs",
                error.code,
                secret_id,
                delay,
                extra=fields(secret=secret_id, code=error.code, attempt=attempt, delay=delay),
            )

        try:
            return await retry_transient(
                once,
                backoff=self.backoff,
                attempts=self.max_attempts,
                retryable=repeatable,
                on_retry=retrying,
            )
        except SourceError as translated:
            detail = str(translated).removeprefix(f"{secret_id}: {translated.code}").removeprefix(": ")
            raise secrets_error(
                secret_id, translated.code, detail, etag_sent=etag_sent, reading_value=reading_value
            ) from (translated.__cause__ or translated)

    def _call_error(self, error: BaseException, secret_id: str, principal: Principal | None) -> SourceError:
        translated = translate(error, secret_id)
        if principal is None and self.identity.quota_project is None:
            return translated
        # Told in terms of the identity: who was refused, or the quota project a refusal is about.
        explained = explain_call_error(translated, principal, self.identity.quota_project)
        return translated if explained is translated else _with_hint(explained)

    async def _new_client(self) -> SecretManagerServiceAsyncClient:
        # grpc.aio channels bind to the running loop, so clients are only ever built in here.
        settings = self.identity
        if self.endpoint is not None and not settings.endpoint_credentials:
            if self.project is None:
                self.project = await self._project_from_adc()
            self._principal, self.metadata = None, _quota_metadata(settings.quota_project, None)
            return emulator_client(self.endpoint)
        principal = await self._new_principal()
        if self.project is None:
            self.project = await self._project_from_adc()
        self._principal = principal
        self.metadata = _quota_metadata(settings.quota_project, principal)
        if self.endpoint is not None:
            return endpoint_client(self.endpoint, principal.credentials, principal.request)
        return google_client(GLOBAL_ENDPOINT, principal.credentials)

    async def _new_principal(self) -> Principal:
        """The identity's credentials (no token yet: the first call gets one). Sets the project from
        Application Default Credentials when none is known and ADC has one."""
        settings = self.identity
        identity = settings.base
        try:
            # google.auth.default() may read files, run gcloud or probe the metadata server (blocking,
            # with retries): off the loop.
            base, file, adc_project = await asyncio.to_thread(self._base_credentials)
        except TRANSLATABLE as error:
            if settings.credentials_file is None:
                translated = translate(error, self.project or "Secret Manager")
            else:
                file = read_credential_file(settings.credentials_file)
                translated = identity_error(
                    error, self.project or "Secret Manager", identity, file, settings.quota_project
                )
            message = str(translated) if self.project else f"{translated}; and {NO_PROJECT}"
            raise SecretsError(message, code=translated.code) from error
        if self.project is None and adc_project:
            self.project = str(adc_project)
        try:
            credentials = identity_credentials(settings, identity, base)
        except TRANSLATABLE as error:
            translated = identity_error(
                error, self.project or "Secret Manager", identity, file, settings.quota_project
            )
            raise SecretsError(str(translated), code=translated.code) from error
        return Principal(
            identity, credentials, file=file, quota_project=settings.quota_project, timeout=self.call_timeout
        )

    def _base_credentials(self) -> tuple[Any, CredentialFile | None, str | None]:
        """(credentials, what the credential file says, ADC's project): ``credentials_file``, else ADC."""
        if self.identity.credentials_file is None:
            # ADC in one lookup, its project included (base_credentials would drop it, and looking it up
            # again could mean a second probe of the metadata server).
            credentials, adc_project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            return credentials, None, adc_project
        credentials, file = base_credentials(self.identity)
        return credentials, file, None

    async def _project_from_adc(self) -> str:
        """Without ADC credentials loaded (the emulator, a credentials file), ADC may still name a project
        (its credentials file, gcloud's configuration); nothing at all: the one clear error."""
        try:
            _, adc_project = await asyncio.to_thread(google.auth.default)
        except TRANSLATABLE:
            adc_project = None  # no credentials: fine for the emulator, but then no project either
        if not adc_project:
            raise SecretsError(NO_PROJECT, code="FAILED_PRECONDITION")
        return str(adc_project)


def _with_hint(error: SourceError) -> SourceError:
    """An identity failure with its hint in the message (what to grant, to whom), as the agent logs it."""
    if not error.hint or f"(hint: {error.hint})" in error.message:
        return error
    return type(error)(f"{error.message} (hint: {error.hint})", code=error.code, ref=error.ref)


def _quota_metadata(quota_project: str | None, principal: Principal | None) -> Metadata:
    """``x-goog-user-project`` for every call when the credentials cannot carry it themselves (none are
    sent, or their kind has no ``with_quota_project``), as the agent's gcp source adds it."""
    if quota_project is None or (principal is not None and carries_quota_project(principal.credentials)):
        return ()
    return (("x-goog-user-project", quota_project),)


def identity_settings(
    endpoint: str | None,
    env: Mapping[str, str],
    *,
    credentials_file: str | os.PathLike[str] | None,
    impersonate_service_account: str | None,
    delegates: Sequence[str],
    iam_endpoint: str | None,
    quota_project: str | None,
    endpoint_credentials: bool | None,
) -> IdentitySettings:
    """The identity arguments of ``SecretManager``, checked by the agent's loader (its parsers and rules, as
    for the agent's ``gcp`` section and the rotation config's).

    Args:
        endpoint: The manager's endpoint (None: Google).
        env: Where ``quota_project`` is read when it is None (``QUOTA_PROJECT_ENVS``).
        credentials_file: See ``SecretManager``.
        impersonate_service_account: See ``SecretManager``.
        delegates: See ``SecretManager`` (a string of emails is read as ``SECRETS_AGENT_GCP_DELEGATES``).
        iam_endpoint: See ``SecretManager``.
        quota_project: See ``SecretManager``.
        endpoint_credentials: See ``SecretManager``.

    Returns:
        The settings, resolved.

    Raises:
        ConfigError: With every problem, each named ``SecretManager.ARGUMENT`` (or the variable).
    """
    given: dict[str, object] = {
        "credentials_file": None if credentials_file is None else os.fspath(credentials_file),
        "impersonate_service_account": impersonate_service_account,
        # A string of emails is read as the agent reads SECRETS_AGENT_GCP_DELEGATES.
        "delegates": delegates if isinstance(delegates, str) else (list(delegates) or None),
        "iam_endpoint": iam_endpoint,
        "quota_project": quota_project,
    }
    gcp, problems = read_identity_section({k: v for k, v in given.items() if v is not None}, _ARGUMENTS)
    if quota_project is None:
        try:
            from_env = quota_project_from(env)
        except ConfigError as error:
            problems.extend(error.problems)
        else:
            if from_env is not None:
                gcp = dataclasses.replace(gcp, quota_project=from_env)
    if endpoint_credentials is not None and not isinstance(endpoint_credentials, bool):
        problems.append(
            Problem(
                f"{_ARGUMENTS}.endpoint_credentials",
                f"expected True, False or None, got {endpoint_credentials!r}",
            )
        )
        endpoint_credentials = None
    gcp = dataclasses.replace(gcp, endpoint=endpoint, endpoint_credentials=endpoint_credentials)
    settings = IdentitySettings.from_config(gcp)
    if endpoint is not None and settings.endpoint_credentials:
        host = _host_of(endpoint)
        if not is_loopback(host):
            problems.append(
                Problem(
                    f"{_ARGUMENTS}.endpoint",
                    f"{host} is not a loopback address, and the manager would send it access tokens in "
                    "plaintext: use an endpoint on a loopback address (an emulator on this machine), or pass "
                    "endpoint_credentials=False",
                )
            )
    if problems:
        raise ConfigError(problems)
    return settings


def _host_of(endpoint: str) -> str:
    try:
        host, _ = split_listen(endpoint)
    except ValueError:
        host = endpoint.rpartition(":")[0].strip("[]")
    return host
