"""Who the agent is to Secret Manager, how that is described, and what is said when it fails.

An ``Identity`` is one way of proving who the agent is: the base credentials (``gcp.credentials_file``, a
credential configuration or key file, else Application Default Credentials), optionally impersonating a
service account through a delegation chain (``gcp.impersonate_service_account``, or a secret's own). The
gcp source keeps ONE google-auth credentials object per distinct identity, shared by that identity's
clients (one per location): two secrets that impersonate the same account share its token and refreshes.

Everything that proves anything is google-auth's, unpatched: ``google.auth.load_credentials_from_file``
reads the file (an ``external_account`` one exchanges the pod's projected Kubernetes token at STS, and its
file source is re-read at every refresh, so a token the kubelet rewrote is the one exchanged next);
``google.auth.default`` finds ADC; ``impersonated_credentials.Credentials`` impersonates (its
``iam_endpoint_override`` is how tests reach the emulator); ``with_quota_project`` adds
``x-goog-user-project``. This module decides which objects to build, refreshes them off the event loop and
one refresh at a time per identity (``Principal.fresh``), and turns their failures into one line that
names the identity: the account, the pool provider's audience, the quota project; never a token.

Nothing Google is imported at the top: ``check-config`` describes the identities (``describe_identities``)
without loading any Google client.

The parts, each in its own module and all importable from this one: what an identity is
(``identity_model``), how it is described (``identity_describe``), what its failures say
(``identity_errors``); here, the credentials and the ``Principal`` that refreshes them.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import TYPE_CHECKING, Any

from agent.config.schema import SERVICE_ACCOUNT_RESOURCE
from agent.errors import SourceError
from agent.sources.identity_describe import caller_of, describe_identities, describe_identity
from agent.sources.identity_errors import (
    QUOTA_ROLE,
    TOKEN_CREATOR_PERMISSION,
    TOKEN_CREATOR_ROLE,
    clean,
    explain_call_error,
    identity_error,
)
from agent.sources.identity_model import (
    CREDENTIAL_TYPES,
    MAX_CREDENTIAL_FILE_BYTES,
    CredentialFile,
    Identity,
    IdentitySettings,
    read_credential_file,
)

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "CREDENTIAL_TYPES",
    "MAX_CREDENTIAL_FILE_BYTES",
    "QUOTA_ROLE",
    "TOKEN_CREATOR_PERMISSION",
    "TOKEN_CREATOR_ROLE",
    "CredentialFile",
    "Identity",
    "IdentitySettings",
    "Principal",
    "base_credentials",
    "caller_of",
    "carries_quota_project",
    "clean",
    "describe_identities",
    "describe_identity",
    "explain_call_error",
    "identity_credentials",
    "identity_error",
    "read_credential_file",
    "timed_request",
]

log = logging.getLogger(__name__)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


# --------------------------------------------------------------------------------------------------
# Credentials (google-auth, imported when a credential is first needed)
# --------------------------------------------------------------------------------------------------


def base_credentials(settings: IdentitySettings) -> tuple[Credentials, CredentialFile | None]:
    """The credentials every identity starts from: ``credentials_file``, else Application Default
    Credentials; scoped for Secret Manager. Blocking for ADC (it may probe the metadata server): call it off
    the event loop. Raises google-auth's errors (``DefaultCredentialsError`` and its kin)."""
    import google.auth
    import google.auth.credentials
    from google.auth import exceptions as auth_exceptions

    if settings.credentials_file is None:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        return credentials, None
    file = read_credential_file(settings.credentials_file)
    if file.problem is not None:
        raise auth_exceptions.DefaultCredentialsError(file.problem)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        # google-auth warns that its generic loader does not check the file's type: read_credential_file
        # just did (CREDENTIAL_TYPES), and the file is the operator's own configuration.
        warnings.filterwarnings(
            "ignore", message="The load_credentials_from_file method", category=DeprecationWarning
        )
        # No scopes here: with scopes, an external_account file would look its project up at once (a token
        # exchange and a Resource Manager call, blocking, at load time).
        credentials, _ = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            str(settings.credentials_file)
        )
    scoped = google.auth.credentials.with_scopes_if_required(  # type: ignore[no-untyped-call]
        credentials, [CLOUD_PLATFORM_SCOPE]
    )
    return scoped, file


def identity_credentials(settings: IdentitySettings, identity: Identity, base: Credentials) -> Credentials:
    """The credentials of ``identity``, built on ``base`` (no network): impersonated if it says so, with the
    quota project applied."""
    credentials: Any = base
    if identity.impersonate is not None:
        from google.auth import impersonated_credentials

        endpoint = settings.iam_endpoint.format(identity.impersonate) if settings.iam_endpoint else None
        credentials = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=base,
            target_principal=identity.impersonate,
            target_scopes=[CLOUD_PLATFORM_SCOPE],
            # IAM Credentials names the chain's accounts as resources, not bare emails.
            delegates=[SERVICE_ACCOUNT_RESOURCE + account for account in identity.delegates] or None,
            iam_endpoint_override=endpoint,
        )
    if settings.quota_project is not None and carries_quota_project(credentials):
        credentials = credentials.with_quota_project(settings.quota_project)
    result: Credentials = credentials
    return result


def carries_quota_project(credentials: object) -> bool:
    """Whether ``credentials`` can send ``x-goog-user-project`` themselves (``with_quota_project``)."""
    from google.auth.credentials import CredentialsWithQuotaProject

    return isinstance(credentials, CredentialsWithQuotaProject)


def timed_request(timeout: float) -> Any:
    """google-auth's HTTP transport with ``timeout`` seconds per request (its own default is 120 s): a
    token service that does not answer must not hold a refresh past the agent's call timeout."""
    import google.auth.transport.requests

    class TimedRequest(google.auth.transport.requests.Request):
        def __call__(
            self,
            url: str,
            method: str = "GET",
            body: Any = None,
            headers: Any = None,
            timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            return super().__call__(  # type: ignore[no-untyped-call]
                url, method, body, headers, timeout or limit, **kwargs
            )

    limit = timeout
    return TimedRequest()


class Principal:
    """One identity's credentials object, as every client of that identity uses it.

    ``fresh()`` refreshes the token, when google-auth says it is stale (shortly before it expires) or
    missing, in a worker thread and one refresh at a time: a bootstrap of 100 secrets costs one exchange,
    not 100, and the event loop never waits on STS or IAM. gRPC's credentials plugin then finds a valid
    token and only adds it (if a token goes stale between the two, the plugin refreshes it in gRPC's own
    thread, off the loop too). A failure is raised as the ``SourceError`` of ``identity_error`` and logged
    once per distinct failure, naming the identity.
    """

    def __init__(
        self,
        identity: Identity,
        credentials: Credentials,
        *,
        file: CredentialFile | None = None,
        quota_project: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.identity = identity
        self.credentials = credentials
        self.file = file
        self.quota_project = quota_project
        self.description = describe_identity(identity, file, quota_project)
        """What names this identity in the log: the account, the file's type, audience and subject token,
        the quota project."""
        self.name = describe_identity(identity, file, quota_project, detailed=False)
        """What names it in each secret's error (the file by its path only)."""
        self.request = timed_request(timeout)
        """The HTTP transport of refreshes (shared with the gRPC plugin of the endpoint channels)."""
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._reported: str | None = None
        from google.auth.credentials import TokenState

        self._fresh_state = TokenState.FRESH

    async def fresh(self, ref: str) -> None:
        """Make sure the token is fresh; raises ``SourceError`` (for ``ref``) when it cannot be had."""
        if self.credentials.token_state == self._fresh_state:
            return
        async with self._lock:
            if self.credentials.token_state == self._fresh_state:
                return  # refreshed while this call waited for the lock
            from agent.sources.errors import TRANSLATABLE

            try:
                # An impersonation behind a token exchange makes two requests, each bounded by the timeout.
                async with asyncio.timeout(2 * self._timeout + 1.0):
                    await asyncio.to_thread(self.credentials.refresh, self.request)
            except TRANSLATABLE as error:
                raise self.failed(error, ref) from error
            if self._reported is not None:
                log.info("identity works again: %s", self.description)
                self._reported = None

    def failed(self, error: BaseException, ref: str) -> SourceError:
        """The translated failure, logged once (a changed failure is logged again)."""
        translated = identity_error(error, ref, self.identity, self.file, self.quota_project)
        line = translated.message.removeprefix(f"{ref}: ").removesuffix(f"; identity {self.name}")
        if line != self._reported:
            self._reported = line
            hint = f" (hint: {translated.hint})" if translated.hint else ""
            log.error("no token for identity %s: %s%s", self.description, line, hint)
        return translated
