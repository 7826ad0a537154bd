"""An identity's failures, translated: one line naming the identity (the account, the pool provider's
audience, the quota project), never a token; transient or permanent as a retry should treat it.

``identity_error`` explains why an identity has no token (google-auth's errors); ``explain_call_error``
tells a Secret Manager call's failure in terms of the identity that made it. google-auth is imported only
when a failure is translated.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from agent.errors import PermanentSourceError, SourceError, TransientSourceError
from agent.sources.identity_describe import caller_of, describe_identity
from agent.sources.identity_model import CredentialFile, Identity

if TYPE_CHECKING:
    from agent.sources.identity import Principal

TOKEN_CREATOR_PERMISSION = "iam.serviceAccounts.getAccessToken"  # noqa: S105 - a permission's name
"""What impersonating an account takes (``roles/iam.serviceAccountTokenCreator`` grants it)."""
TOKEN_CREATOR_ROLE = "roles/iam.serviceAccountTokenCreator"  # noqa: S105 - a role's name
QUOTA_ROLE = "roles/serviceusage.serviceUsageConsumer"
"""What a caller needs on the project it names in ``x-goog-user-project``."""
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
