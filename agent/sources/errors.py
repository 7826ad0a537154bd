"""The ONE place backend failures become ``SourceError``: Google's exceptions, gRPC errors, timeouts.

``translate(error, ref)`` decides, from the gRPC status, whether retrying can help
(``TransientSourceError``) or not (``PermanentSourceError``), and attaches an operator hint. The message
is ``"<ref>: <STATUS>: <service message>"``.

Why the service message is safe to show: the agent only sends AccessSecretVersion and GetSecretVersion,
whose requests carry nothing but a resource name, and error statuses carry no payload; the service's
messages name the resource and the problem (``Secret Version [projects/p/secrets/s/versions/2] is in
DISABLED state.``). Messages are still folded to one line and bounded, because they end up in logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions

from agent.errors import PermanentSourceError, SourceError, TransientSourceError

NO_CREDENTIALS = (
    "no Google credentials found: on GKE enable Workload Identity for the pod's service account; "
    "locally run `gcloud auth application-default login`, or set SECRET_MANAGER_EMULATOR_HOST to use "
    "the emulator"
)
"""The one line shown when Application Default Credentials cannot be found."""

_MAX_SERVICE_MESSAGE = 300


@dataclass(frozen=True)
class StatusRule:
    """How one gRPC status is treated."""

    transient: bool
    """True: retry with backoff; False: fail now, retrying cannot help."""
    hint: str
    """A short suggestion for the operator."""


_SERVER_SAYS_RETRY = StatusRule(True, "a server-side error that the service documents as worth a retry")

STATUS_RULES: dict[str, StatusRule] = {
    "NOT_FOUND": StatusRule(False, "check the reference and project; does the secret/version exist?"),
    "PERMISSION_DENIED": StatusRule(
        False, "grant roles/secretmanager.secretAccessor on the secret to the pod's service account"
    ),
    "FAILED_PRECONDITION": StatusRule(
        False, "the version is disabled or destroyed: enable it, or pin an enabled version"
    ),
    "INVALID_ARGUMENT": StatusRule(False, "the service rejected the request: check the reference's spelling"),
    "UNAUTHENTICATED": StatusRule(
        False,
        "the credentials are missing, expired or rejected: check Workload Identity on GKE, "
        "or run `gcloud auth application-default login` locally",
    ),
    "ALREADY_EXISTS": StatusRule(False, "the resource already exists"),
    "OUT_OF_RANGE": StatusRule(False, "check the version number in the reference"),
    "UNIMPLEMENTED": StatusRule(
        False, "the endpoint does not serve this call: check the endpoint (regional secrets need theirs)"
    ),
    "UNAVAILABLE": StatusRule(
        True, "Secret Manager is unreachable or overloaded: check the network path (and gcp.endpoint, if set)"
    ),
    "RESOURCE_EXHAUSTED": StatusRule(
        True,
        "quota exceeded (per project and minute: 90,000 accesses, 600 reads): poll less often or switch to "
        "events",
    ),
    "DEADLINE_EXCEEDED": StatusRule(
        True, "no answer within the call timeout: raise gcp.call_timeout if this persists"
    ),
    "INTERNAL": _SERVER_SAYS_RETRY,
    "UNKNOWN": _SERVER_SAYS_RETRY,
    "ABORTED": _SERVER_SAYS_RETRY,
    "CANCELLED": StatusRule(True, "the call was cancelled before it completed"),
    "DATA_LOSS": StatusRule(True, "the payload's checksum did not match: the value was discarded"),
}
"""Every gRPC status except OK: transient or permanent, and the hint shown with it."""

# HTTP statuses of REST-style API errors that carry no gRPC status (google.api_core maps both ways).
_HTTP_TO_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

TRANSLATABLE: tuple[type[BaseException], ...] = (
    google_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    grpc.RpcError,
    TimeoutError,
    ConnectionError,
)
"""What call sites catch and hand to ``translate``; anything else is a bug and must propagate as such."""


def hint_for(status: str) -> str:
    """The operator hint for a gRPC status name (empty when there is none)."""
    rule = STATUS_RULES.get(status)
    return rule.hint if rule is not None else ""


def source_error(ref: str, status: str, detail: str, *, hint: str | None = None) -> SourceError:
    """A ``SourceError`` of the right kind for ``status``: ``"<ref>: <STATUS>: <detail>"``.

    Unknown statuses are treated as transient: the last known good value stays, and we keep asking.
    """
    rule = STATUS_RULES.get(status, _SERVER_SAYS_RETRY)
    kind = TransientSourceError if rule.transient else PermanentSourceError
    detail = _one_line(detail)
    message = f"{ref}: {status}: {detail}" if detail else f"{ref}: {status}"
    return kind(message, code=status, ref=ref, hint=rule.hint if hint is None else hint)


def translate(error: BaseException, ref: str) -> SourceError:
    """Map ``error`` from a Secret Manager call for ``ref`` to the agent's error tree.

    Use as ``except TRANSLATABLE as e: raise translate(e, ref) from e``.
    """
    if isinstance(error, SourceError):
        return error
    if isinstance(error, auth_exceptions.DefaultCredentialsError):
        return PermanentSourceError(
            NO_CREDENTIALS, code="UNAUTHENTICATED", ref=ref, hint=hint_for("UNAUTHENTICATED")
        )
    if isinstance(error, google_exceptions.GoogleAPICallError):
        return source_error(ref, _status_of_api_error(error), error.message)
    if isinstance(error, google_exceptions.RetryError):
        # Only raised by a client-side retry policy; ours is off, but keep the cause's status if there is one.
        cause = error.cause
        if isinstance(cause, google_exceptions.GoogleAPICallError):
            return source_error(ref, _status_of_api_error(cause), cause.message)
        return source_error(ref, "DEADLINE_EXCEEDED", "the client's retry deadline passed")
    if isinstance(error, grpc.RpcError):
        return _from_rpc_error(error, ref)
    if isinstance(error, auth_exceptions.RefreshError):
        # e.g. the GKE metadata server not ready yet at pod start (retryable), or a revoked account (not).
        transient = bool(getattr(error, "retryable", False))
        status = "UNAVAILABLE" if transient else "UNAUTHENTICATED"
        return source_error(ref, status, f"could not obtain an access token: {_first_line(error)}")
    if isinstance(error, auth_exceptions.TransportError):
        detail = f"could not reach the credentials service: {_first_line(error)}"
        return source_error(ref, "UNAVAILABLE", detail)
    if isinstance(error, auth_exceptions.GoogleAuthError):
        return source_error(ref, "UNAUTHENTICATED", _first_line(error))
    if isinstance(error, TimeoutError):
        return source_error(ref, "DEADLINE_EXCEEDED", "no answer within the call timeout")
    if isinstance(error, ConnectionError):
        return source_error(ref, "UNAVAILABLE", f"connection failed ({type(error).__name__})")
    return source_error(ref, "UNKNOWN", f"unexpected {type(error).__name__}")


def _status_of_api_error(error: google_exceptions.GoogleAPICallError) -> str:
    code = error.grpc_status_code
    if code is not None:
        return str(code.name)
    http = error.code
    return _HTTP_TO_STATUS.get(http, "UNKNOWN") if isinstance(http, int) else "UNKNOWN"


def _from_rpc_error(error: grpc.RpcError, ref: str) -> SourceError:
    # grpc.aio.AioRpcError and sync grpc.Call errors both offer code() and details().
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else None
    status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    details = details_of() if callable(details_of) else ""
    return source_error(ref, status, details if isinstance(details, str) else "")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _one_line(text: str) -> str:
    folded = " ".join(text.split())
    if len(folded) > _MAX_SERVICE_MESSAGE:
        return folded[: _MAX_SERVICE_MESSAGE - 3] + "..."
    return folded
