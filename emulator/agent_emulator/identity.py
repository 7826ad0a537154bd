"""Identity at run time: the tokens the emulator has issued, and every check Google makes with them.

- **STS** (:meth:`IdentityService.exchange`, ``POST /v1/token``): a subject token verified by
  :mod:`agent_emulator.sts` becomes a federated access token for
  ``principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/SUB``.
- **IAM Credentials** (:meth:`IdentityService.generate_access_token`,
  ``POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken``): the caller's token must be valid; each
  hop of ``caller -> delegates... -> target`` needs ``iam.serviceAccounts.getAccessToken`` (the account's
  ``token_creators``); the token issued belongs to the target's email.
- **Secret Manager** (the ``AccessGate`` of :mod:`agent_emulator.dispatch`): with ``require_auth``, every
  call needs ``authorization: Bearer <a token the emulator issued>`` (UNAUTHENTICATED otherwise, or when
  it expired on the emulator's clock), a quota project (``x-goog-user-project``) the principal may use,
  and the method's permission on the secret (PERMISSION_DENIED "... (or it may not exist).").
- **Admin** (:meth:`IdentityService.mint`, ``POST /emulator/v1/tokens``): a token for any principal, as a
  GKE metadata server or ``gcloud auth print-access-token`` would hand one out.

Tokens are opaque (``ya29.emulator.<random>``), kept in memory (at most :data:`MAX_TOKENS`), and expire on
the emulator's clock, so ``POST /emulator/v1/clock:advance`` expires them without waiting. Messages are
Google's; none ever quotes a token.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from agent_emulator import sts
from agent_emulator.calls import IAM_CREDENTIALS, SECRET_MANAGER, STS, CallLog, CallRecord
from agent_emulator.clock import Clock
from agent_emulator.dispatch import Caller, resource_of
from agent_emulator.errors import EmulatorError, ErrorInfo
from agent_emulator.identity_config import (
    MAX_EXTENDED_LIFETIME_SECONDS,
    IdentityConfig,
    normalize_principal,
)
from agent_emulator.methods import SERVICE, Method

MAX_TOKENS = 100_000
"""Most live tokens kept; past it, expired ones are dropped, then the oldest."""
TOKEN_PREFIX = "ya29.emulator."  # noqa: S105 - a prefix, not a credential
MAX_SCOPES = 100
MAX_DELEGATES = 20

TokenKind = Literal["federated", "service_account", "admin"]

_MISSING = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_INVALID = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"  # noqa: S105 - a permission name
_GENERATE_METHOD = "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken"
_IAM_DENIED = f"Permission '{_GET_ACCESS_TOKEN}' denied on resource (or it may not exist)."
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,254}|[0-9]{1,20}")
_EMAIL = re.compile(r"[^@\s/:*]{1,256}@[^@\s/:*]{1,256}")
_DURATION = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,9}))?s")
_SECRET_OF = re.compile(r"projects/[^/]+(?:/locations/[^/]+)?/secrets/[^/]+")
_PARENT = re.compile(r"projects/[^/]+(?:/locations/[^/]+)?")

# Method -> (permission, what it applies to): a secret (and its versions) or a parent (list/create).
PERMISSIONS: dict[str, tuple[str, Literal["secret", "parent"]]] = {
    "AccessSecretVersion": ("secretmanager.versions.access", "secret"),
    "GetSecretVersion": ("secretmanager.versions.get", "secret"),
    "ListSecretVersions": ("secretmanager.versions.list", "secret"),
    "EnableSecretVersion": ("secretmanager.versions.enable", "secret"),
    "DisableSecretVersion": ("secretmanager.versions.disable", "secret"),
    "DestroySecretVersion": ("secretmanager.versions.destroy", "secret"),
    "AddSecretVersion": ("secretmanager.versions.add", "secret"),
    "GetSecret": ("secretmanager.secrets.get", "secret"),
    "UpdateSecret": ("secretmanager.secrets.update", "secret"),
    "DeleteSecret": ("secretmanager.secrets.delete", "secret"),
    "ListSecrets": ("secretmanager.secrets.list", "parent"),
    "CreateSecret": ("secretmanager.secrets.create", "parent"),
}
"""The IAM permission each Secret Manager method needs, as the service checks it."""


@dataclass(frozen=True)
class IssuedToken:
    """What the emulator knows about a token it issued."""

    principal: str
    kind: TokenKind
    scopes: tuple[str, ...]
    issued_at: dt.datetime
    expires_at: dt.datetime


def rfc3339_seconds(moment: dt.datetime) -> str:
    """``2024-05-01T12:00:00Z``: whole seconds, the only form google-auth parses in ``expireTime``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthenticated(message: str, reason: str, service: str, method: str) -> EmulatorError:
    """A 401 as Google's front end sends it, with its ErrorInfo (``CREDENTIALS_MISSING``,
    ``ACCESS_TOKEN_EXPIRED``, ``ACCESS_TOKEN_TYPE_UNSUPPORTED``)."""
    info = ErrorInfo(reason, "googleapis.com", {"service": service, "method": method})
    return EmulatorError(grpc.StatusCode.UNAUTHENTICATED, message, info)


def user_project_denied(project: str, service: str) -> EmulatorError:
    """Google's refusal of an ``x-goog-user-project`` the caller may not bill."""
    message = (
        f"Caller does not have required permission to use project {project}. Grant the caller the "
        "roles/serviceusage.serviceUsageConsumer role, or a custom role with the serviceusage.services.use "
        "permission, by visiting "
        f"https://console.developers.google.com/iam-admin/iam/project?project={project} and then retry. "
        "Propagation of the new permission may take a few minutes."
    )
    info = ErrorInfo(
        "USER_PROJECT_DENIED", "googleapis.com", {"consumer": f"projects/{project}", "service": service}
    )
    return EmulatorError(grpc.StatusCode.PERMISSION_DENIED, message, info)


def iam_permission_denied(permission: str, resource: str) -> EmulatorError:
    """Secret Manager's refusal of a call its principal holds no permission for."""
    message = f"Permission '{permission}' denied for resource '{resource}' (or it may not exist)."
    info = ErrorInfo(
        "IAM_PERMISSION_DENIED", SECRET_MANAGER, {"permission": permission, "resource": resource}
    )
    return EmulatorError(grpc.StatusCode.PERMISSION_DENIED, message, info)


class TokenTable:
    """Issued tokens by value; bounded, thread-safe."""

    def __init__(self, capacity: int = MAX_TOKENS) -> None:
        self._capacity = capacity
        self._tokens: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()

    def issue(self, record: IssuedToken, now: dt.datetime) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            if len(self._tokens) >= self._capacity:
                self._tokens = {t: r for t, r in self._tokens.items() if r.expires_at > now}
            while len(self._tokens) >= self._capacity:
                del self._tokens[next(iter(self._tokens))]
            self._tokens[token] = record
        return token

    def get(self, token: str) -> IssuedToken | None:
        with self._lock:
            return self._tokens.get(token)

    def revoke(self, token: str) -> int:
        with self._lock:
            return 1 if self._tokens.pop(token, None) is not None else 0

    def revoke_principal(self, principal: str) -> int:
        with self._lock:
            doomed = [t for t, r in self._tokens.items() if r.principal == principal]
            for token in doomed:
                del self._tokens[token]
        return len(doomed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


class IdentityService:
    """Tokens, the STS exchange, generateAccessToken, and the Secret Manager ``AccessGate``."""

    def __init__(self, config: IdentityConfig, clock: Clock, calls: CallLog) -> None:
        self._config = config
        self.clock = clock
        self.calls = calls
        self.tokens = TokenTable()

    @property
    def config(self) -> IdentityConfig:
        return self._config

    def replace(self, config: IdentityConfig) -> None:
        """Switch to a new identity config; tokens already issued stay valid until they expire."""
        self._config = config

    # ---- tokens ---------------------------------------------------------------------------------------

    def _issue(
        self, principal: str, kind: TokenKind, scopes: tuple[str, ...], lifetime_seconds: float
    ) -> tuple[str, IssuedToken]:
        now = self.clock.now()
        record = IssuedToken(principal, kind, scopes, now, now + dt.timedelta(seconds=lifetime_seconds))
        return self.tokens.issue(record, now), record

    def mint(self, principal: str, lifetime_seconds: int, scopes: tuple[str, ...]) -> dict[str, Any]:
        """An admin-minted token (the principal is already validated); the admin API's answer."""
        token, record = self._issue(principal, "admin", scopes, lifetime_seconds)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime_seconds,
            "expire_time": rfc3339_seconds(record.expires_at),
            "principal": principal,
        }

    def resolve(self, token: str) -> tuple[IssuedToken | None, bool]:
        """(what the token is, whether it is still valid) on the emulator's clock."""
        record = self.tokens.get(token)
        if record is None:
            return None, False
        return record, self.clock.now() < record.expires_at

    def _caller(self, authorization: str | None, service: str, method: str) -> IssuedToken:
        if authorization is None or not authorization.strip():
            raise unauthenticated(_MISSING, "CREDENTIALS_MISSING", service, method)
        token = bearer_token(authorization)
        record, valid = self.resolve(token) if token is not None else (None, False)
        if record is None:
            raise unauthenticated(_INVALID, "ACCESS_TOKEN_TYPE_UNSUPPORTED", service, method)
        if not valid:
            raise unauthenticated(_INVALID, "ACCESS_TOKEN_EXPIRED", service, method)
        return record

    def _check_quota_project(self, project: str | None, principal: str, service: str) -> None:
        if not project:
            return
        if not _PROJECT.fullmatch(project):
            info = ErrorInfo("USER_PROJECT_INVALID", "googleapis.com", {"service": service})
            raise EmulatorError(
                grpc.StatusCode.INVALID_ARGUMENT, "User project specified in the request is invalid.", info
            )
        if not self._config.may_use_quota_project(principal, project):
            raise user_project_denied(project, service)

    def _log(
        self,
        service: str,
        method: str,
        resource: str,
        principal: str | None,
        quota_project: str | None,
        result: str,
        message: str | None = None,
    ) -> None:
        self.calls.record(
            CallRecord(
                self.clock.now(), service, method, resource, principal, quota_project, result, "rest", message
            )
        )

    # ---- Secret Manager: the AccessGate ------------------------------------------------------------------

    def authenticate(self, method: Method, caller: Caller) -> str | None:
        """The caller's principal; with ``require_auth``, UNAUTHENTICATED for a missing, unknown or expired
        token. Without it a known valid token still names the caller (for the call log); nothing fails."""
        qualified = f"{SERVICE}.{method.name}"
        if self._config.require_auth:
            record = self._caller(caller.authorization, SECRET_MANAGER, qualified)
            if record.scopes and sts.CLOUD_PLATFORM not in record.scopes:
                # Secret Manager takes cloud-platform only, as the real service does.
                info = ErrorInfo(
                    "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "googleapis.com",
                    {"service": SECRET_MANAGER, "method": qualified},
                )
                raise EmulatorError(
                    grpc.StatusCode.PERMISSION_DENIED, "Request had insufficient authentication scopes.", info
                )
            return record.principal
        token = bearer_token(caller.authorization)
        known, valid = self.resolve(token) if token is not None else (None, False)
        return known.principal if known is not None and valid else None

    def check_quota_project(self, method: Method, caller: Caller, principal: str | None) -> None:
        if self._config.require_auth and principal is not None:
            self._check_quota_project(caller.quota_project, principal, SECRET_MANAGER)

    def authorize(self, method: Method, request: Any, principal: str | None) -> None:
        if not self._config.require_auth or principal is None:
            return
        permission, applies_to = PERMISSIONS[method.name]
        resource = resource_of(request)
        if applies_to == "secret":
            found = _SECRET_OF.match(resource)
            if found is None:
                return  # malformed: the store answers INVALID_ARGUMENT, as the service does first
            granted = self._config.permissions(principal, found.group(0), None)
        else:
            if not _PARENT.fullmatch(resource):
                return
            granted = self._config.permissions(principal, None, resource)
        if permission not in granted:
            raise iam_permission_denied(permission, resource)

    # ---- STS -------------------------------------------------------------------------------------------

    def exchange(self, form: Mapping[str, str]) -> dict[str, Any]:
        """One token exchange; StsError (HTTP 400) when refused. Logged either way."""
        audience = form.get("audience", "")
        try:
            decided = sts.exchange(form, self._config, self.clock.now().timestamp())
        except sts.StsError as error:
            self._log(STS, "ExchangeToken", audience, None, None, error.error, error.description)
            raise
        token, _ = self._issue(decided.principal, "federated", decided.scopes, decided.expires_in)
        self._log(STS, "ExchangeToken", audience, decided.principal, None, "OK")
        return {
            "access_token": token,
            "issued_token_type": sts.ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": decided.expires_in,
        }

    # ---- IAM Credentials ---------------------------------------------------------------------------------

    def generate_access_token(self, account: str, caller: Caller, body: object) -> dict[str, Any]:
        """``projects/-/serviceAccounts/{account}:generateAccessToken``; EmulatorError as IAM answers.

        A refusal of a hop in the chain says what Google says (no account named); the call log adds which
        hop it was.
        """
        resource = f"projects/-/serviceAccounts/{account}"
        principal: str | None = None
        detail: str | None = None
        try:
            record = self._caller(caller.authorization, IAM_CREDENTIALS, _GENERATE_METHOD)
            principal = record.principal
            if self._config.require_auth:
                self._check_quota_project(caller.quota_project, principal, IAM_CREDENTIALS)
            scopes, delegates, lifetime = self._parse_body(body)
            target = self._account(account)
            chain = [principal, *(self._account(d) for d in delegates), target]
            for creator, subject in itertools.pairwise(chain):
                if not self._config.may_create_tokens(creator, subject):
                    detail = f"[emulator: {creator} may not get tokens for {subject}]"
                    info = ErrorInfo(
                        "IAM_PERMISSION_DENIED", "iam.googleapis.com", {"permission": _GET_ACCESS_TOKEN}
                    )
                    raise EmulatorError(grpc.StatusCode.PERMISSION_DENIED, _IAM_DENIED, info)
        except EmulatorError as error:
            message = error.message if detail is None else f"{error.message} {detail}"
            self._log(
                IAM_CREDENTIALS,
                "GenerateAccessToken",
                resource,
                principal,
                caller.quota_project,
                error.code.name,
                message,
            )
            raise
        token, issued = self._issue(target, "service_account", scopes, lifetime)
        self._log(IAM_CREDENTIALS, "GenerateAccessToken", resource, principal, caller.quota_project, "OK")
        return {"accessToken": token, "expireTime": rfc3339_seconds(issued.expires_at)}

    def _account(self, name: str) -> str:
        """A service account named by email or ``projects/-/serviceAccounts/EMAIL``, which must exist."""
        email = name.removeprefix("projects/-/serviceAccounts/")
        if not _EMAIL.fullmatch(email):
            raise EmulatorError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid form of account ID {_clip(email)}. "
                "Should be [Gaia ID |Email |Unique ID |] of the account",
            )
        email = normalize_principal(email)
        if email not in self._config.service_accounts:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Not found; Gaia id not found for email {email}")
        return email

    def _parse_body(self, body: object) -> tuple[tuple[str, ...], list[str], float]:
        if not isinstance(body, dict):
            raise _bad_request("Invalid JSON payload received. Expected an object.")
        for key in body:
            if key not in ("scope", "delegates", "lifetime"):
                raise _bad_request(
                    f'Invalid JSON payload received. Unknown name "{_clip(str(key), 64)}": Cannot find field.'
                )
        scopes = _strings(body.get("scope"), "scope", MAX_SCOPES)
        delegates = _strings(body.get("delegates"), "delegates", MAX_DELEGATES)
        lifetime = _lifetime(body.get("lifetime"), self._config.max_token_lifetime_seconds)
        # google-auth sends the scopes it was given; none at all means the service's default.
        return tuple(s for s in scopes if s) or (sts.CLOUD_PLATFORM,), delegates, lifetime


def _clip(text: str, limit: int = 256) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def _bad_request(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _strings(value: object, name: str, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and len(item) <= 1024 for item in value):
        raise _bad_request(
            f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.ListValue): "
            "expected a list of strings."
        )
    if len(value) > limit:
        raise _bad_request(f"Too many values in '{name}': at most {limit}.")
    return list(value)


def _lifetime(value: object, maximum: int) -> float:
    if value is None:
        return 3600.0 if maximum >= 3600 else float(maximum)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _bad_request(
            "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration): "
            'expected a duration like "3600s".'
        )
    seconds = int(match.group(1)) + float(f"0.{match.group(2) or 0}")
    if seconds <= 0:
        raise _bad_request("Lifetime of access token must be larger then zero.")
    if seconds > maximum:
        hours = maximum / 3600
        limit = f"{hours:g} hour" + ("" if hours == 1 else "s")
        extension = (
            " Use the Org Policy Constraint constraints/iam.allowServiceAccountCredentialLifetimeExtension "
            f"to allow up to {MAX_EXTENDED_LIFETIME_SECONDS // 3600} hours."
            if maximum < MAX_EXTENDED_LIFETIME_SECONDS
            else ""
        )
        raise _bad_request(f"can not have lifetimes of more than {limit}.{extension}")
    return seconds
