"""One line naming an identity, for the log, the errors and ``check-config``: who is impersonated, through
whom, with which credentials, and the quota project. Never a token or a key; no Google code (``check-config``
describes the identities without loading any Google client).
"""

from __future__ import annotations

from agent.config import Config
from agent.sources.identity_model import CredentialFile, Identity, IdentitySettings, read_credential_file


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
    settings = IdentitySettings.from_config(gcp, [*config.secrets, *config.select])
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
        for select in config.select:
            if select.impersonate_service_account is not None:
                identity = Identity(
                    gcp.credentials_file, select.impersonate_service_account, select.delegates
                )
                lines.append(f"identity of select {select.name!r}: {describe_identity(identity, file)}")
        if settings.iam_endpoint is not None:
            lines.append(f"impersonation tokens from {settings.iam_endpoint}")
    if gcp.quota_project is not None:
        lines.append(f"quota project: {gcp.quota_project} (sent as x-goog-user-project)")
    else:
        lines.append("quota project: none (each call counts against the project of its secret)")
    return lines
