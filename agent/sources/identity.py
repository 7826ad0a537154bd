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
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import Config, GcpConfig, SecretSpec
from agent.config.schema import SERVICE_ACCOUNT_RESOURCE
from agent.errors import PermanentSourceError, SourceError, TransientSourceError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

log = logging.getLogger(__name__)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_CREATOR_PERMISSION = "iam.serviceAccounts.getAccessToken"  # noqa: S105 - a permission's name
"""What impersonating an account takes (``roles/iam.serviceAccountTokenCreator`` grants it)."""
TOKEN_CREATOR_ROLE = "roles/iam.serviceAccountTokenCreator"  # noqa: S105 - a role's name
QUOTA_ROLE = "roles/serviceusage.serviceUsageConsumer"
"""What a caller needs on the project it names in ``x-goog-user-project``."""
MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024
CREDENTIAL_TYPES = (
    "external_account",
    "service_account",
    "authorized_user",
    "impersonated_service_account",
    "external_account_authorized_user",
    "gdch_service_account",
)
"""The ``type`` values google-auth's file loader accepts; anything else is refused before it is loaded."""
_IMPERSONATION_URL = re.compile(r"/serviceAccounts/(?P<account>[^/:]+):generateAccessToken")
_POOL_AUDIENCE = re.compile(
    r"//iam\.googleapis\.com/(?P<pool>projects/[^/]+/locations/[^/]+/workloadIdentityPools/[^/]+)/providers/"
)
# Anything shaped like a bearer token, a JWT or an OAuth access token is cut out of service messages: a
# misbehaving server echoing what it was sent must not put it in a log line.
_TOKEN_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|ya29\.[A-Za-z0-9._-]+"
    r"|(?i:bearer)\s+\S+"
)
_MAX_DETAIL = 300
_PLUGIN_FAILURE = "Getting metadata from plugin failed"
"""How gRPC reports a credentials plugin that raised (a refresh that failed in gRPC's own thread)."""
_RETRYABLE_OAUTH = frozenset({"temporarily_unavailable", "server_error"})
_IMPERSONATION_FAILED = "Unable to acquire impersonated credentials"
"""How google-auth's impersonated credentials start the message of a refused generateAccessToken."""
_TRANSIENT_STATUSES = frozenset(
    {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
)


# --------------------------------------------------------------------------------------------------
# What an identity is (pure: no Google code)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """One way the agent proves who it is: the key of its credentials object (and, with a location, of
    its clients)."""

    credentials_file: Path | None = None
    """The credential file of ``gcp.credentials_file``, or None for Application Default Credentials."""
    impersonate: str | None = None
    """The service account impersonated with those credentials, or None."""
    delegates: tuple[str, ...] = ()
    """The delegation chain to ``impersonate`` (emails, in order)."""


@dataclass(frozen=True)
class IdentitySettings:
    """The identity part of the ``gcp`` configuration, as the source uses it."""

    credentials_file: Path | None = None
    impersonate: str | None = None
    delegates: tuple[str, ...] = ()
    iam_endpoint: str | None = None
    """The generateAccessToken URL with ``{}`` for the account, or None for Google's."""
    quota_project: str | None = None
    endpoint_credentials: bool = False
    """Whether credentials go to ``gcp.endpoint`` (resolved: ``GcpConfig.endpoint_gets_credentials``)."""
    endpoint_tls: bool = False

    @classmethod
    def from_config(cls, gcp: GcpConfig, secrets: Sequence[SecretSpec] = ()) -> IdentitySettings:
        """The settings of ``gcp`` (and of the ``secrets`` that name their own identity)."""
        return cls(
            credentials_file=gcp.credentials_file,
            impersonate=gcp.impersonate_service_account,
            delegates=gcp.delegates,
            iam_endpoint=gcp.iam_endpoint,
            quota_project=gcp.quota_project,
            endpoint_credentials=gcp.endpoint_gets_credentials(secrets),
            endpoint_tls=gcp.endpoint_tls,
        )

    @property
    def base(self) -> Identity:
        """The identity of every secret that names none of its own."""
        return Identity(self.credentials_file, self.impersonate, self.delegates)

    def of(self, spec: SecretSpec, base: Identity | None = None) -> Identity:
        """The identity ``spec`` is fetched with (``base``: this object's ``base``, if already at hand)."""
        if spec.impersonate_service_account is None:
            return base if base is not None else self.base
        return Identity(self.credentials_file, spec.impersonate_service_account, spec.delegates)


@dataclass(frozen=True)
class CredentialFile:
    """What a credential file says about the identity it proves, never the key, token or secret in it."""

    path: Path
    type: str | None = None
    audience: str | None = None
    """``external_account``: the workload identity pool provider (``//iam.googleapis.com/projects/...``)."""
    token_url: str | None = None
    """``external_account``: where the subject token is exchanged (STS)."""
    subject_token: str | None = None
    """``external_account``: where the subject token comes from (``file /var/run/...``, ``url ...``)."""
    impersonated: str | None = None
    """The account named by ``service_account_impersonation_url``, if any."""
    client_email: str | None = None
    """``service_account``: the key's account."""
    quota_project: str | None = None
    """``quota_project_id`` in the file, if any."""
    problem: str | None = None
    """Why the file cannot be used (missing, unreadable, not JSON, an unknown type), or None."""

    @property
    def pool(self) -> str | None:
        """``projects/N/locations/global/workloadIdentityPools/P`` of the audience, or None."""
        match = _POOL_AUDIENCE.match(self.audience or "")
        return match["pool"] if match else None

    def summary(self) -> str:
        """What the file is, in a few words: its type, audience, subject token, impersonated account."""
        if self.problem is not None:
            return f"unusable: {self.problem}"
        parts: list[str] = []
        if self.type == "external_account":
            parts.append("external_account: Workload Identity Federation")
            if self.audience:
                parts.append(f"audience {self.audience}")
            if self.subject_token:
                parts.append(f"subject token from {self.subject_token}")
            if self.token_url:
                parts.append(f"exchanged at {self.token_url}")
        elif self.type == "service_account":
            parts.append(f"service_account key of {self.client_email or 'an unnamed account'}")
        elif self.type == "authorized_user":
            parts.append("authorized_user: a person's gcloud credentials")
        else:
            parts.append(str(self.type))
        if self.impersonated:
            parts.append(f"impersonating {self.impersonated} (service_account_impersonation_url)")
        if self.quota_project:
            parts.append(f"quota project {self.quota_project} (quota_project_id)")
        return ", ".join(parts)


def read_credential_file(path: Path) -> CredentialFile:
    """What ``path`` holds, or why it cannot be used (``problem``). Reads at most 1 MiB; never fails."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_CREDENTIAL_FILE_BYTES + 1)
    except FileNotFoundError:
        return CredentialFile(path, problem="no such file")
    except OSError as error:
        return CredentialFile(path, problem=f"cannot read it: {error.strerror or type(error).__name__}")
    if len(data) > MAX_CREDENTIAL_FILE_BYTES:
        return CredentialFile(path, problem="larger than 1 MiB: not a credential file")
    try:
        info = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return CredentialFile(path, problem="not JSON (a credential file is a JSON object)")
    if not isinstance(info, dict):
        return CredentialFile(path, problem="not a JSON object")
    kind = info.get("type")
    if kind not in CREDENTIAL_TYPES:
        shown = repr(kind)[:60] if isinstance(kind, str) else "missing"
        return CredentialFile(
            path, problem=f"type {shown} is not one google-auth loads ({', '.join(CREDENTIAL_TYPES[:3])}...)"
        )
    source = info.get("credential_source")
    subject: str | None = None
    if isinstance(source, dict):
        if isinstance(source.get("file"), str):
            subject = f"file {source['file']}"
        elif isinstance(source.get("url"), str):
            subject = f"url {source['url']}"
        elif "executable" in source:
            subject = "an executable"
        elif "environment_id" in source:
            subject = "AWS"
        elif "certificate" in source:
            subject = "an X.509 certificate"
    url = info.get("service_account_impersonation_url")
    impersonated = _IMPERSONATION_URL.search(url) if isinstance(url, str) else None
    return CredentialFile(
        path,
        type=kind,
        audience=_text(info.get("audience")),
        token_url=_text(info.get("token_url")),
        subject_token=subject,
        impersonated=impersonated["account"] if impersonated else None,
        client_email=_text(info.get("client_email")),
        quota_project=_text(info.get("quota_project_id")),
    )


def _text(value: object) -> str | None:
    return value[:300] if isinstance(value, str) and value else None


def describe_identity(
    identity: Identity,
    file: CredentialFile | None = None,
    quota_project: str | None = None,
    *,
    detailed: bool = True,
) -> str:
    """One line naming ``identity``: who is impersonated, through whom, with which credentials (with
    ``detailed``, what the file is: its type, audience and subject token), and the quota project. Never a
    token or a key."""
    if identity.credentials_file is None:
        base = "Application Default Credentials"
    else:
        shown = file if file is not None and file.path == identity.credentials_file else None
        base = f"credentials file {identity.credentials_file}"
        if shown is not None and detailed:
            base += f" ({shown.summary()})"
    if identity.impersonate is None:
        text = base
    else:
        text = f"{identity.impersonate}, impersonated with {base}"
        if identity.delegates:
            text += f" through {' -> '.join(identity.delegates)}"
    if quota_project:
        text += f"; quota project {quota_project}"
    return text


def caller_of(identity: Identity, file: CredentialFile | None = None) -> str:
    """Who Secret Manager sees calling: the principal its IAM bindings must name."""
    if identity.impersonate is not None:
        return identity.impersonate
    if file is not None and file.impersonated:
        return file.impersonated
    if file is not None and file.client_email:
        return file.client_email
    if file is not None and file.pool:
        subject = "<the token's subject>"
        return f"the federated identity principal://iam.googleapis.com/{file.pool}/subject/{subject}"
    return "the pod's service account"


def describe_identities(config: Config) -> list[str]:
    """The credential path of ``config``'s gcp source, one line each (for ``check-config`` and the start
    log): which identity, per-secret identities, the endpoint and the quota project. No secret, no token."""
    gcp = config.gcp
    settings = IdentitySettings.from_config(gcp, config.secrets)
    lines: list[str] = []
    if gcp.endpoint is not None and not settings.endpoint_credentials:
        lines.append(
            f"Secret Manager: the endpoint {gcp.endpoint} over {'TLS' if gcp.endpoint_tls else 'plaintext'} "
            "gRPC, without credentials"
        )
    else:
        if gcp.endpoint is not None:
            transport = "TLS" if gcp.endpoint_tls else "plaintext gRPC on loopback"
            lines.append(f"Secret Manager: the endpoint {gcp.endpoint} over {transport}, with credentials")
        file = read_credential_file(gcp.credentials_file) if gcp.credentials_file is not None else None
        lines.append(f"identity: {describe_identity(settings.base, file)}")
        per_secret: dict[Identity, list[str]] = {}
        for spec in config.secrets:
            if spec.impersonate_service_account is not None:
                per_secret.setdefault(settings.of(spec), []).append(spec.name)
        for identity, names in per_secret.items():
            label = "secret" if len(names) == 1 else "secrets"
            lines.append(f"identity of {label} {', '.join(names)}: {describe_identity(identity, file)}")
        if settings.iam_endpoint is not None:
            lines.append(f"impersonation tokens from {settings.iam_endpoint}")
    if gcp.quota_project is not None:
        lines.append(f"quota project: {gcp.quota_project} (sent as x-goog-user-project)")
    else:
        lines.append("quota project: none (each call counts against the project of its secret)")
    return lines


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


# --------------------------------------------------------------------------------------------------
# Failures: one line naming the identity, never a token
# --------------------------------------------------------------------------------------------------


def clean(text: str) -> str:
    """A service's message, fit for a log line: one line, bounded, anything token-shaped cut out."""
    folded = _TOKEN_SHAPES.sub("<token>", " ".join(text.split()))
    return folded if len(folded) <= _MAX_DETAIL else folded[: _MAX_DETAIL - 3] + "..."


def _error(status: str, ref: str, detail: str, hint: str, *, transient: bool) -> SourceError:
    kind = TransientSourceError if transient else PermanentSourceError
    return kind(f"{ref}: {status}: {detail}", code=status, ref=ref, hint=hint)


def _body_of(error: BaseException) -> str:
    """The response body google-auth attaches to its errors (their second argument), or ''."""
    args: tuple[object, ...] = getattr(error, "args", ())
    return args[1] if len(args) > 1 and isinstance(args[1], str) else ""


def _first_arg(error: BaseException) -> str:
    return str(error.args[0]) if error.args else type(error).__name__


def _oauth_error(error: BaseException) -> tuple[str | None, str]:
    """(``error`` code, ``error_description``) of an OAuth 2.0 error response (STS), or (None, text)."""
    body = _body_of(error)
    try:
        data = json.loads(body)
    except ValueError:
        return None, _first_arg(error)
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return None, body
    return data["error"], str(data.get("error_description", ""))


_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _google_error(body: str) -> tuple[str, str]:
    """(status, message) of a Google API error body (``{"error": {"code", "status", "message"}}``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return "UNKNOWN", body
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "UNKNOWN", body
    status = error.get("status")
    if not isinstance(status, str):
        code = error.get("code")
        status = _HTTP_STATUS.get(code, "UNKNOWN") if isinstance(code, int) else "UNKNOWN"
    return status, str(error.get("message", ""))


def identity_error(
    error: BaseException,
    ref: str,
    identity: Identity,
    file: CredentialFile | None = None,
    quota_project: str | None = None,
) -> SourceError:
    """Why ``identity`` (whose credential file says ``file``) has no token, as the ``SourceError`` of a
    call for ``ref``.

    * a credentials file that cannot be loaded: permanent, naming the file;
    * STS refusing the subject token (expired, wrong audience, untrusted issuer): permanent UNAUTHENTICATED
      naming the audience and where the token came from (STS saying it is busy: transient);
    * IAM Credentials refusing the impersonation: PERMISSION_DENIED naming the account and the permission
      ``iam.serviceAccounts.getAccessToken``; a server error is transient;
    * the token services unreachable: transient UNAVAILABLE;
    * anything else: ``agent.sources.errors.translate``.
    """
    from google.auth import exceptions as auth_exceptions

    from agent.sources.errors import translate

    who = describe_identity(identity, file, quota_project, detailed=False)
    if isinstance(error, auth_exceptions.DefaultCredentialsError) and identity.credentials_file is not None:
        return _error(
            "UNAUTHENTICATED",
            ref,
            f"gcp.credentials_file {identity.credentials_file}: {clean(str(error))}",
            "mount the credential configuration there (gcloud iam workload-identity-pools create-cred-config "
            "writes one), or unset gcp.credentials_file to use Application Default Credentials",
            transient=False,
        )
    if isinstance(error, auth_exceptions.OAuthError):
        code, description = _oauth_error(error)
        audience = file.audience if file is not None and file.audience else "the configured audience"
        origin = f" from {file.subject_token}" if file is not None and file.subject_token else ""
        detail = (
            f"the token exchange refused the subject token{origin} for audience {audience} "
            f"({code or 'no error code'}: {clean(description)}); identity {who}"
        )
        if code is None or code in _RETRYABLE_OAUTH:
            hint = "the token exchange service failed: retrying"
            return _error("UNAVAILABLE", ref, detail, hint, transient=True)
        return _error(
            "UNAUTHENTICATED",
            ref,
            detail,
            "the subject token is expired or was issued for another audience: the projected service account "
            "token's audience must be one the pool provider allows, and the kubelet must be refreshing it",
            transient=False,
        )
    if isinstance(error, auth_exceptions.RefreshError) and _first_arg(error).startswith(
        _IMPERSONATION_FAILED
    ):
        status, message = _google_error(_body_of(error))
        target = identity.impersonate or (file.impersonated if file is not None else None) or "the account"
        transient = status in _TRANSIENT_STATUSES
        if status == "PERMISSION_DENIED":
            chain = f" (and each account of the chain on the next: {' -> '.join(identity.delegates)})"
            return _error(
                "PERMISSION_DENIED",
                ref,
                f"cannot impersonate {target}: permission {TOKEN_CREATOR_PERMISSION} denied "
                f"({clean(message)}); identity {who}",
                f"grant {TOKEN_CREATOR_ROLE} on {target} to the agent's own credentials"
                + (chain if identity.delegates else ""),
                transient=False,
            )
        return _error(
            status,
            ref,
            f"cannot impersonate {target}: {clean(message) or 'no message'}; identity {who}",
            "IAM Credentials failed: retrying" if transient else f"check that {target} exists and is enabled",
            transient=transient,
        )
    if isinstance(error, auth_exceptions.TransportError):
        return _error(
            "UNAVAILABLE",
            ref,
            f"could not reach the token service ({clean(str(error))}); identity {who}",
            "check the network path to STS / IAM Credentials (or the emulator)",
            transient=True,
        )
    if isinstance(error, auth_exceptions.RefreshError) and not getattr(error, "retryable", False):
        return _error(
            "UNAUTHENTICATED",
            ref,
            f"could not obtain an access token ({clean(_first_arg(error))}); identity {who}",
            "the credentials are missing or rejected: for Workload Identity Federation, is the projected "
            "service account token mounted where the credential file says?",
            transient=False,
        )
    if isinstance(error, TimeoutError):
        detail = f"no token within the timeout; identity {who}"
        return _error("DEADLINE_EXCEEDED", ref, detail, "retrying", transient=True)
    return translate(error, ref)


def explain_call_error(
    error: SourceError, principal: Principal | None, quota_project: str | None
) -> SourceError:
    """A Secret Manager call's translated failure, told in terms of the identity that made it: who was
    refused (PERMISSION_DENIED, UNAUTHENTICATED), the quota project a refusal is about, a credentials
    plugin's failure without its text (it would quote a response body)."""
    message = error.message
    ref = error.ref
    detail = message.removeprefix(f"{ref}: {error.code}: ") if ref else message
    if _PLUGIN_FAILURE in message:
        return _error(
            "UNAVAILABLE",
            ref,
            "the credentials could not be refreshed for this call"
            + (f"; identity {principal.name}" if principal is not None else ""),
            "retrying: the next attempt refreshes them first and says why if it fails again",
            transient=True,
        )
    if error.code == "PERMISSION_DENIED" and quota_project and _about_quota(detail, quota_project):
        caller = caller_of(principal.identity, principal.file) if principal is not None else "the caller"
        return _error(
            "PERMISSION_DENIED",
            ref,
            f"quota project {quota_project} refused ({clean(_first_sentence(detail))})"
            + (f"; identity {principal.name}" if principal is not None else ""),
            f"grant {QUOTA_ROLE} on project {quota_project} to {caller}, or unset gcp.quota_project",
            transient=False,
        )
    if principal is None:
        return error
    caller = caller_of(principal.identity, principal.file)
    if error.code == "PERMISSION_DENIED":
        hint = f"grant roles/secretmanager.secretAccessor on the secret to {caller}"
    elif error.code == "UNAUTHENTICATED":
        hint = "the service refused the identity's token: check the identity's set-up (docs/identity.md)"
    else:
        return error
    return type(error)(f"{message}; identity {principal.name}", code=error.code, ref=ref, hint=hint)


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


def _about_quota(detail: str, quota_project: str) -> bool:
    """Whether a PERMISSION_DENIED is about the quota project rather than the secret."""
    lowered = detail.lower()
    # Google: "Caller does not have required permission to use project P. Grant the caller the
    # roles/serviceusage.serviceUsageConsumer role..." (reason USER_PROJECT_DENIED). The quota project's name
    # alone proves nothing: it may also be the project of the secret.
    return (
        f"use project {quota_project.lower()}" in lowered
        or "user_project" in lowered
        or "serviceusage" in lowered
        or "quota project" in lowered
        or "x-goog-user-project" in lowered
    )
