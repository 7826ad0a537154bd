"""What an identity is, as data: no Google code, no network.

An ``Identity`` is one way of proving who the agent is (the key of its credentials object);
``IdentitySettings`` is the identity part of the ``gcp`` configuration; a ``CredentialFile`` is what a
credential file says about the identity it proves (``read_credential_file``), never the key, token or
secret in it. The credentials themselves are built in ``agent.sources.identity``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config import GcpConfig, SecretSpec, SelectSpec

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
    def from_config(cls, gcp: GcpConfig, secrets: Sequence[SecretSpec | SelectSpec] = ()) -> IdentitySettings:
        """The settings of ``gcp`` (and of the ``secrets`` and selections that name their own identity)."""
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
