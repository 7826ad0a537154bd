"""Google's Security Token Service token exchange (``POST /v1/token``), decided as a pure function.

What an ``external_account`` credential configuration's ``token_url`` points at: google-auth sends
``application/x-www-form-urlencoded`` (RFC 8693)::

    grant_type=urn:ietf:params:oauth:grant-type:token-exchange
    requested_token_type=urn:ietf:params:oauth:token-type:access_token
    subject_token_type=urn:ietf:params:oauth:token-type:jwt        (or ...:id_token)
    audience=//iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/providers/PROV
    scope=https://www.googleapis.com/auth/cloud-platform
    subject_token=<the JWT>

and gets ``{"access_token", "issued_token_type", "token_type": "Bearer", "expires_in"}``, or HTTP 400
``{"error": "invalid_grant", "error_description": ...}`` in the STS's own words (measured against
sts.googleapis.com): a wrong ``aud`` is "The audience in ID Token [...] does not match the expected
audience.", an expired token "ID Token issued at N is stale to sign-in.", a wrong key "Unable to verify the
ID Token signature.", a token whose key the provider does not have "Error connecting to the given
credential's issuer.", an unknown provider ``invalid_target``. A description never quotes the subject token.

The checks, in order: the request's parameters, the provider named by ``audience``, the token's signature
(keys from the identity config only, never fetched), ``iss``, ``aud``, the time window (``exp``, ``iat``,
``nbf``; 60 s of skew), ``sub`` (present, at most 127 bytes, within ``allowed_subjects`` if set). The token
issued lives ``min(exp - now, token_lifetime_seconds)`` and belongs to
``principal://iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/subject/SUB``.
Workforce pools, SAML and AWS subject tokens are not emulated (``invalid_target`` / ``invalid_request``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from agent_emulator import jwt_verify
from agent_emulator.identity_config import IdentityConfig, ProviderConfig, provider_name
from agent_emulator.jwt_verify import JwtRejected

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
SUBJECT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
MAX_BODY_BYTES = 64 * 1024
"""Largest token-exchange request body (the subject token is at most 16 KiB)."""
MAX_SUBJECT_BYTES = 127
"""Longest ``google.subject`` Google maps (the ``sub`` claim here)."""
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

_AUDIENCE_HELP = (
    'Invalid value for "audience". This value should be the full resource name of the Identity Provider. '
    "See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible "
    "formats."
)
_NO_TARGET = (
    'The target service indicated by the "audience" parameters is invalid. This might either be because '
    "the pool or provider is disabled or deleted or because it doesn't exist."
)


class StsError(Exception):
    """An exchange refused: HTTP 400 ``{"error": error, "error_description": description}``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Exchange:
    """A successful exchange, before a token is minted for it."""

    provider: ProviderConfig
    subject: str
    scopes: tuple[str, ...]
    expires_in: int

    @property
    def principal(self) -> str:
        return self.provider.principal(self.subject)


def _required(form: Mapping[str, str], name: str, error: str = "invalid_request") -> str:
    value = form.get(name, "")
    if not value:
        raise StsError(error, f'Invalid value for "{name}".')
    return value


def find_provider(config: IdentityConfig, audience: str) -> ProviderConfig:
    """The provider an ``audience`` parameter names; StsError as the STS words it otherwise."""
    if not audience.startswith("//iam.googleapis.com/"):
        raise StsError("invalid_request", _AUDIENCE_HELP)
    name = provider_name(audience)
    if name is None:
        if "/workforcePools/" in audience or "/workloadIdentityPools/" in audience:
            raise StsError("invalid_target", _NO_TARGET)
        raise StsError("invalid_request", _AUDIENCE_HELP)
    provider = config.providers.get(name)
    if provider is None:
        raise StsError("invalid_target", _NO_TARGET)
    return provider


def exchange(form: Mapping[str, str], config: IdentityConfig, now: float) -> Exchange:
    """Decide one token exchange at time ``now`` (seconds since the epoch, on the emulator's clock)."""
    if form.get("grant_type") != GRANT_TYPE:
        raise StsError("unsupported_grant_type", 'Invalid value for "grant_type".')
    if _required(form, "requested_token_type") != ACCESS_TOKEN_TYPE:
        raise StsError("invalid_request", 'Invalid value for "requested_token_type".')
    if _required(form, "subject_token_type") not in SUBJECT_TOKEN_TYPES:
        raise StsError(
            "invalid_request",
            'Invalid value for "subject_token_type". The emulator exchanges OIDC tokens only: '
            + " or ".join(SUBJECT_TOKEN_TYPES)
            + ".",
        )
    provider = find_provider(config, _required(form, "audience"))
    subject_token = _required(form, "subject_token")
    try:
        token = jwt_verify.decode(subject_token)
        jwt_verify.verify_signature(token, provider.keys)
        exp = jwt_verify.check_claims(
            token.claims, issuer=provider.issuer, audiences=provider.audiences, now=now
        )
    except JwtRejected as error:
        raise StsError(error.error, error.reason) from None
    subject = token.claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise StsError("invalid_grant", "The mapped attribute google.subject must not be empty.")
    if len(subject.encode("utf-8")) > MAX_SUBJECT_BYTES or not subject.isprintable():
        raise StsError(
            "invalid_grant",
            f"The size of mapped attribute google.subject exceeds the {MAX_SUBJECT_BYTES} bytes limit. "
            "Either modify your attribute mapping or the incoming assertion to produce a mapped attribute "
            f"that is less than {MAX_SUBJECT_BYTES} bytes.",
        )
    allowed = provider.allowed_subjects
    if allowed is not None and not any(_subject_matches(pattern, subject) for pattern in allowed):
        raise StsError("unauthorized_client", "The given credential is rejected by the attribute condition.")
    scopes = tuple(form.get("scope", "").split()) or (CLOUD_PLATFORM,)
    # Never longer than the subject token is good for (at least a second: inside the skew it has ~none).
    remaining = math.floor(exp - now)
    expires_in = max(1, min(config.token_lifetime_seconds, remaining))
    return Exchange(provider, subject, scopes[:100], expires_in)


def _subject_matches(pattern: str, subject: str) -> bool:
    return subject.startswith(pattern[:-1]) if pattern.endswith("*") else subject == pattern
