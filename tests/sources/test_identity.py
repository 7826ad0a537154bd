"""The gcp source's identities at work, with google-auth unpatched: a local token service (STS and IAM
Credentials over real HTTP) that google-auth reaches through its own overrides (the credential file's
``token_url``, ``iam_endpoint_override``), the emulator or a TLS Secret Manager stand-in over real gRPC.

What is shown: one token exchange per identity however many secrets are fetched at once, refreshes off the
event loop, a projected token file rewritten between refreshes is the one exchanged next, refusals become
one line naming the identity (audience, account, permission) and never a token, credentials reach a TLS
endpoint and Google's transport as the very object that is refreshed, the quota project is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import grpc
import pytest
import trustme
from google.auth import exceptions as auth_exceptions
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.types import service

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import crc32c
from agent.errors import PermanentSourceError, SourceError, TransientSourceError
from agent.sources.gcp import GcpSource, endpoint_client, google_client
from agent.sources.identity import Principal, base_credentials, identity_credentials
from agent.sources.identity_errors import clean, explain_call_error, identity_error
from agent.sources.identity_model import Identity, IdentitySettings, read_credential_file
from agent_emulator.server import EmulatorEndpoints
from tests.conftest import async_client

PROJECT = "test-project"
AUDIENCE = (
    "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/pool/providers/kind"
)
READER = "reader@test-project.iam.gserviceaccount.com"
HOP = "hop@test-project.iam.gserviceaccount.com"
# Shaped like a JWT: a server echoing it must not get it into a message.
SUBJECT_CANARY = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ"
ACCESS_TOKEN = "ya29.access-token-canary-never-logged"


@dataclass
class TokenService:
    """STS (``POST /v1/token``) and generateAccessToken on 127.0.0.1, as Google answers them."""

    expires_in: int = 3600
    delay: float = 0.0
    sts_error: tuple[int, dict[str, Any]] | None = None
    iam_error: tuple[int, dict[str, Any]] | None = None
    subject_tokens: list[str] = field(default_factory=list)
    impersonations: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        time.sleep(self.delay)
        if path == "/v1/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            with self.lock:
                self.subject_tokens.append(form.get("subject_token", ""))
            if self.sts_error is not None:
                return self.sts_error
            return 200, {
                "access_token": f"{ACCESS_TOKEN}-{len(self.subject_tokens)}",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        if path.endswith(":generateAccessToken"):
            request = json.loads(body)
            with self.lock:
                self.impersonations.append(
                    {
                        "account": path.rsplit("/", 1)[-1].split(":")[0],
                        "authorization": headers.get("authorization"),
                        **request,
                    }
                )
            if self.iam_error is not None:
                return self.iam_error
            return 200, {"accessToken": f"{ACCESS_TOKEN}-impersonated", "expireTime": "2099-01-01T00:00:00Z"}
        return 404, {"error": {"code": 404, "message": "no such path", "status": "NOT_FOUND"}}


@pytest.fixture
def tokens() -> Iterator[TokenService]:
    service_ = TokenService()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, document = service_.handle(self.path, self.headers, body)
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service_.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield service_
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_token(path: Path, token: str) -> None:
    """As the kubelet does: a new file swapped in whole."""
    staged = path.with_suffix(".new")
    staged.write_text(token)
    staged.replace(path)


def wif_file(tmp_path: Path, tokens: TokenService, token: str = "subject-token-1") -> Path:
    token_file = tmp_path / "token"
    write_token(token_file, token)
    path = tmp_path / "credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": AUDIENCE,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": f"{tokens.url}/v1/token",
                "credential_source": {"file": str(token_file), "format": {"type": "text"}},
            }
        )
    )
    return path


def spec(name: str, impersonate: str | None = None, delegates: tuple[str, ...] = ()) -> SecretSpec:
    return SecretSpec(
        name=name,
        ref=parse_ref(f"projects/{PROJECT}/secrets/{name}", PROJECT),
        impersonate_service_account=impersonate,
        delegates=delegates,
    )


@pytest.fixture
async def seeded(emulator: EmulatorEndpoints) -> EmulatorEndpoints:
    """The emulator (no identity config: it takes any token) with secrets s0..s49 holding value-0..49."""
    client = async_client(emulator.grpc_target)
    for i in range(50):
        secret = await client.create_secret(
            parent=f"projects/{PROJECT}", secret_id=f"s{i}", secret=secretmanager_v1.Secret()
        )
        await client.add_secret_version(
            parent=secret.name, payload=secretmanager_v1.SecretPayload(data=f"value-{i}".encode())
        )
    await client.transport.close()
    return emulator


async def recent_calls(emulator: EmulatorEndpoints) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{emulator.admin_url}/calls") as response:
        assert response.status == 200
        calls: list[dict[str, Any]] = (await response.json())["calls"]
        return calls


# --- one exchange, off the loop, the rotated file read ------------------------------------------------------


async def test_fifty_secrets_at_once_cost_one_exchange_made_off_the_event_loop(
    seeded: EmulatorEndpoints, tokens: TokenService, tmp_path: Path
) -> None:
    tokens.delay = 0.5  # a slow STS: the loop must keep turning meanwhile
    settings = IdentitySettings(credentials_file=wif_file(tmp_path, tokens), endpoint_credentials=True)
    source = GcpSource(endpoint=seeded.grpc_target, call_timeout=5.0, identity=settings)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        fetched = await asyncio.gather(*(source.fetch(spec(f"s{i}")) for i in range(50)))
        keys = source.client_keys()
    finally:
        ticker.cancel()
        await source.close()
    assert [f.data for f in fetched] == [f"value-{i}".encode() for i in range(50)]
    assert len(tokens.subject_tokens) == 1
    assert max(gaps) < 0.4, max(gaps)  # a refresh on the loop would stall it for the whole 0.5 s
    assert keys == [(None, Identity(settings.credentials_file))]


async def test_a_rewritten_token_file_is_the_one_exchanged_at_the_next_refresh(
    seeded: EmulatorEndpoints, tokens: TokenService, tmp_path: Path
) -> None:
    # google-auth refreshes 3m45s (225 s) before expiry: a 226 s token is fresh for one second.
    tokens.expires_in = 226
    credentials = wif_file(tmp_path, tokens, "kubelet-token-1")
    settings = IdentitySettings(credentials_file=credentials, endpoint_credentials=True)
    source = GcpSource(endpoint=seeded.grpc_target, call_timeout=5.0, identity=settings)
    try:
        await source.fetch(spec("s1"))
        await source.fetch(spec("s2"))  # the token is fresh: no exchange
        assert tokens.subject_tokens == ["kubelet-token-1"]
        write_token(tmp_path / "token", "kubelet-token-2")
        [principal] = source._principals.values()
        deadline = time.monotonic() + 5
        while principal.credentials.token_state.name == "FRESH":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)  # waiting for the clock itself: the token goes stale with time
        await source.current_version(spec("s3"))
        await source.fetch(spec("s4"))
    finally:
        await source.close()
    assert tokens.subject_tokens == ["kubelet-token-1", "kubelet-token-2"]


async def test_impersonation_sends_the_chain_and_one_identity_serves_all_its_secrets(
    seeded: EmulatorEndpoints, tokens: TokenService, tmp_path: Path
) -> None:
    settings = IdentitySettings(
        credentials_file=wif_file(tmp_path, tokens),
        iam_endpoint=f"{tokens.url}/v1/projects/-/serviceAccounts/{{}}:generateAccessToken",
        endpoint_credentials=True,
    )
    source = GcpSource(endpoint=seeded.grpc_target, call_timeout=5.0, identity=settings)
    try:
        await asyncio.gather(*(source.fetch(spec(f"s{i}", READER, (HOP,))) for i in range(10)))
        await source.fetch(spec("s10"))
        keys = source.client_keys()
    finally:
        await source.close()
    assert tokens.impersonations == [
        {
            "account": READER,
            "authorization": f"Bearer {ACCESS_TOKEN}-1",
            "delegates": [f"projects/-/serviceAccounts/{HOP}"],
            "scope": ["https://www.googleapis.com/auth/cloud-platform"],
            "lifetime": "3600s",
        }
    ]
    # Two identities, two clients, one exchange each (google-auth's impersonated credentials refresh a
    # copy of their source of their own); ten secrets of one identity never cost more.
    assert len(keys) == 2
    assert len(tokens.subject_tokens) == 2


# --- refusals: one line naming the identity, never a token -------------------------------------------------


async def test_a_refused_subject_token_names_the_audience_and_is_logged_once(
    seeded: EmulatorEndpoints, tokens: TokenService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens.sts_error = (
        400,
        {"error": "invalid_grant", "error_description": f"ID Token {SUBJECT_CANARY} has expired."},
    )
    credentials = wif_file(tmp_path, tokens, SUBJECT_CANARY)
    settings = IdentitySettings(
        credentials_file=credentials, endpoint_credentials=True, quota_project="billing-project"
    )
    source = GcpSource(endpoint=seeded.grpc_target, call_timeout=5.0, identity=settings)
    try:
        with pytest.raises(PermanentSourceError) as first:
            await source.fetch(spec("s1"))
        with pytest.raises(PermanentSourceError):
            await source.fetch(spec("s2"))
    finally:
        await source.close()
    error = first.value
    assert error.code == "UNAUTHENTICATED"
    token_file = tmp_path / "token"
    assert error.message == (
        f"projects/{PROJECT}/secrets/s1/versions/latest: UNAUTHENTICATED: the token exchange refused the "
        f"subject token from file {token_file} for audience {AUDIENCE} (invalid_grant: ID Token <token> has "
        f"expired.); identity credentials file {credentials}; quota project billing-project"
    )
    assert "expired or was issued for another audience" in error.hint
    # Said once, naming the identity in full: what the file is, the audience, where the token comes from.
    lines = [r.getMessage() for r in caplog.records if "no token for identity" in r.getMessage()]
    assert lines == [
        f"no token for identity credentials file {credentials} (external_account: Workload Identity "
        f"Federation, audience {AUDIENCE}, subject token from file {token_file}, exchanged at "
        f"{tokens.url}/v1/token); quota project billing-project: UNAUTHENTICATED: the token exchange refused "
        f"the subject token from file {token_file} for audience {AUDIENCE} (invalid_grant: ID Token <token> "
        f"has expired.) (hint: {error.hint})"
    ]
    everything = error.message + error.hint + "\n".join(r.getMessage() for r in caplog.records)
    assert SUBJECT_CANARY not in everything
    assert ACCESS_TOKEN not in everything


async def test_denied_impersonation_names_the_account_and_the_permission(
    seeded: EmulatorEndpoints, tokens: TokenService, tmp_path: Path
) -> None:
    tokens.iam_error = (
        403,
        {
            "error": {
                "code": 403,
                "message": (
                    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
                    "(or it may not exist)."
                ),
                "status": "PERMISSION_DENIED",
            }
        },
    )
    settings = IdentitySettings(
        credentials_file=wif_file(tmp_path, tokens),
        impersonate=READER,
        delegates=(HOP,),
        iam_endpoint=f"{tokens.url}/v1/projects/-/serviceAccounts/{{}}:generateAccessToken",
        endpoint_credentials=True,
    )
    source = GcpSource(endpoint=seeded.grpc_target, call_timeout=5.0, identity=settings)
    try:
        with pytest.raises(PermanentSourceError) as raised:
            await source.fetch(spec("s1"))
    finally:
        await source.close()
    assert raised.value.code == "PERMISSION_DENIED"
    assert (
        f"cannot impersonate {READER}: permission iam.serviceAccounts.getAccessToken denied"
        in raised.value.message
    )
    assert f"identity {READER}, impersonated with credentials file" in raised.value.message
    assert f"through {HOP}" in raised.value.message
    assert raised.value.hint == (
        f"grant roles/iam.serviceAccountTokenCreator on {READER} to the agent's own credentials "
        f"(and each account of the chain on the next: {HOP})"
    )
    assert ACCESS_TOKEN not in raised.value.message


async def test_an_unusable_credentials_file_is_permanent_and_remembered(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    source = GcpSource(endpoint=None, identity=IdentitySettings(credentials_file=missing))
    try:
        with pytest.raises(PermanentSourceError) as raised:
            await source.fetch(spec("s1"))
        with pytest.raises(PermanentSourceError) as again:
            await source.current_version(spec("s2"))
    finally:
        await source.close()
    assert raised.value.message == (
        f"projects/{PROJECT}/secrets/s1/versions/latest: UNAUTHENTICATED: gcp.credentials_file {missing}: "
        "no such file"
    )
    assert "create-cred-config" in raised.value.hint
    assert again.value.ref == f"projects/{PROJECT}/secrets/s2/versions/latest"


async def test_an_unreachable_token_service_is_transient(tmp_path: Path, tokens: TokenService) -> None:
    credentials = wif_file(tmp_path, tokens)
    document = json.loads(credentials.read_text())
    document["token_url"] = "http://127.0.0.1:1/v1/token"
    credentials.write_text(json.dumps(document))
    source = GcpSource(
        endpoint="127.0.0.1:1",
        call_timeout=2.0,
        identity=IdentitySettings(credentials, endpoint_credentials=True),
    )
    try:
        with pytest.raises(TransientSourceError) as raised:
            await source.fetch(spec("s1"))
    finally:
        await source.close()
    assert raised.value.code == "UNAVAILABLE"
    assert "could not reach the token service" in raised.value.message


def oauth_error(code: str, description: str) -> auth_exceptions.OAuthError:
    body = json.dumps({"error": code, "error_description": description})
    return auth_exceptions.OAuthError(f"Error code {code}: {description}", body)


def iam_error(code: int, status: str, message: str) -> auth_exceptions.RefreshError:
    body = json.dumps({"error": {"code": code, "status": status, "message": message}})
    return auth_exceptions.RefreshError("Unable to acquire impersonated credentials", body)


@pytest.mark.parametrize(
    ("error", "code", "transient", "says"),
    [
        (
            oauth_error("invalid_grant", "The audience in ID Token [x] does not match"),
            "UNAUTHENTICATED",
            False,
            "does not match",
        ),
        (
            oauth_error("invalid_request", "Invalid value for subject_token_type"),
            "UNAUTHENTICATED",
            False,
            "invalid_request",
        ),
        (oauth_error("temporarily_unavailable", "try later"), "UNAVAILABLE", True, "temporarily_unavailable"),
        (
            auth_exceptions.OAuthError("Error", "<html>502 Bad Gateway</html>"),
            "UNAVAILABLE",
            True,
            "no error code",
        ),
        (
            iam_error(403, "PERMISSION_DENIED", "denied"),
            "PERMISSION_DENIED",
            False,
            "iam.serviceAccounts.getAccessToken",
        ),
        (
            iam_error(404, "NOT_FOUND", "Unknown service account"),
            "NOT_FOUND",
            False,
            "Unknown service account",
        ),
        (iam_error(503, "UNAVAILABLE", "backend"), "UNAVAILABLE", True, "backend"),
        (iam_error(429, "RESOURCE_EXHAUSTED", "slow down"), "RESOURCE_EXHAUSTED", True, "slow down"),
        (
            auth_exceptions.RefreshError("File '/var/run/token' was not found."),
            "UNAUTHENTICATED",
            False,
            "/var/run/token",
        ),
        (auth_exceptions.TransportError("Connection refused"), "UNAVAILABLE", True, "Connection refused"),
        (TimeoutError(), "DEADLINE_EXCEEDED", True, "no token within the timeout"),
    ],
)
def test_identity_failures_are_translated(
    error: BaseException, code: str, transient: bool, says: str
) -> None:
    translated = identity_error(error, "projects/p/secrets/s/versions/latest", Identity(impersonate=READER))
    assert translated.code == code
    assert isinstance(translated, TransientSourceError) is transient
    assert says in translated.message
    assert translated.message.startswith(f"projects/p/secrets/s/versions/latest: {code}: ")
    assert f"identity {READER}, impersonated with Application Default Credentials" in translated.message
    assert "\n" not in translated.message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"token {SUBJECT_CANARY} refused", "token <token> refused"),
        (f"got {ACCESS_TOKEN}", "got <token>"),
        ("Authorization: Bearer abc.def", "Authorization: <token>"),
        ("two\nlines", "two lines"),
        ("x" * 400, "x" * 297 + "..."),
    ],
)
def test_service_messages_are_cleaned(text: str, shown: str) -> None:
    assert clean(text) == shown


def source_error(code: str, detail: str, transient: bool = False) -> SourceError:
    kind = TransientSourceError if transient else PermanentSourceError
    return kind(
        f"projects/p/secrets/s/versions/1: {code}: {detail}", code=code, ref="projects/p/secrets/s/versions/1"
    )


async def test_call_failures_are_told_in_terms_of_the_identity() -> None:
    principal = Principal(Identity(impersonate=READER), object(), quota_project="billing-project")  # type: ignore[arg-type]
    quota = explain_call_error(
        source_error(
            "PERMISSION_DENIED",
            "Caller does not have required permission to use project billing-project. Grant the caller the "
            "roles/serviceusage.serviceUsageConsumer role",
        ),
        principal,
        "billing-project",
    )
    assert quota.message.startswith(
        "projects/p/secrets/s/versions/1: PERMISSION_DENIED: quota project billing-project refused"
    )
    assert quota.hint == (
        f"grant roles/serviceusage.serviceUsageConsumer on project billing-project to {READER}, "
        "or unset gcp.quota_project"
    )
    secret = explain_call_error(
        source_error("PERMISSION_DENIED", "Permission denied on secret"), principal, "billing-project"
    )
    assert secret.hint == f"grant roles/secretmanager.secretAccessor on the secret to {READER}"
    assert secret.message.endswith(
        f"; identity {READER}, impersonated with Application Default Credentials; "
        "quota project billing-project"
    )
    plugin = explain_call_error(
        source_error(
            "UNAVAILABLE", f"Getting metadata from plugin failed with error: ('x', '{SUBJECT_CANARY}')", True
        ),
        principal,
        None,
    )
    assert isinstance(plugin, TransientSourceError)
    assert SUBJECT_CANARY not in plugin.message
    unrelated = source_error("NOT_FOUND", "no such secret")
    assert explain_call_error(unrelated, principal, None) is unrelated


# --- the quota project, credentials over TLS and to Google's transport --------------------------------------


async def test_the_quota_project_is_sent_even_without_credentials(seeded: EmulatorEndpoints) -> None:
    source = GcpSource(
        endpoint=seeded.grpc_target, identity=IdentitySettings(quota_project="billing-project")
    )
    try:
        await source.fetch(spec("s1"))
    finally:
        await source.close()
    calls = [c for c in await recent_calls(seeded) if c["method"] == "AccessSecretVersion"]
    assert calls[-1]["quota_project"] == "billing-project"


@dataclass
class TlsSecretManager:
    """A Secret Manager stand-in over TLS on 127.0.0.1 (trustme): answers AccessSecretVersion, records
    the metadata of each call."""

    port: int
    ca_pem: bytes
    seen: list[dict[str, str]]


@pytest.fixture
async def tls_secret_manager() -> AsyncIterator[TlsSecretManager]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    seen: list[dict[str, str]] = []

    async def access(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        name = service.AccessSecretVersionRequest.deserialize(request).name.replace("latest", "1")
        data = b"over-tls"
        response = service.AccessSecretVersionResponse(
            name=name, payload=secretmanager_v1.SecretPayload(data=data, data_crc32c=crc32c(data))
        )
        serialized: bytes = service.AccessSecretVersionResponse.serialize(response)
        return serialized

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "google.cloud.secretmanager.v1.SecretManagerService",
        {"AccessSecretVersion": grpc.unary_unary_rpc_method_handler(access)},
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), b"".join(blob.bytes() for blob in cert.cert_chain_pems))]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield TlsSecretManager(port, ca.cert_pem.bytes(), seen)
    finally:
        await server.stop(None)


async def principal_for(tmp_path: Path, tokens: TokenService, quota: str | None) -> Principal:
    settings = IdentitySettings(credentials_file=wif_file(tmp_path, tokens), quota_project=quota)
    base, file = base_credentials(settings)
    identity = settings.base
    return Principal(identity, identity_credentials(settings, identity, base), file=file, quota_project=quota)


@pytest.mark.parametrize("transport", ["endpoint", "google"])
async def test_the_refreshed_credentials_are_the_ones_the_channel_sends(
    tls_secret_manager: TlsSecretManager, tokens: TokenService, tmp_path: Path, transport: str
) -> None:
    principal = await principal_for(tmp_path, tokens, "billing-project")
    target = f"localhost:{tls_secret_manager.port}"
    if transport == "endpoint":
        client = endpoint_client(
            target,
            principal.credentials,
            principal.request,
            tls=True,
            root_certificates=tls_secret_manager.ca_pem,
        )
    else:
        client = google_client(
            target,
            principal.credentials,
            ssl_credentials=grpc.ssl_channel_credentials(root_certificates=tls_secret_manager.ca_pem),
        )
    try:
        await principal.fresh("projects/p/secrets/s")
        for _ in range(3):
            response = await client.access_secret_version(
                name="projects/p/secrets/s/versions/latest", retry=None
            )
            assert response.payload.data == b"over-tls"
    finally:
        await client.transport.close()
    # One exchange: the channel's plugin found the token Principal.fresh got (the same object), never
    # refreshed a copy of its own.
    assert len(tokens.subject_tokens) == 1
    for metadata in tls_secret_manager.seen:
        assert metadata["authorization"] == f"Bearer {ACCESS_TOKEN}-1"
        assert metadata["x-goog-user-project"] == "billing-project"


def test_the_credential_file_is_loaded_by_google_auth_without_a_network_call(
    tmp_path: Path, tokens: TokenService
) -> None:
    settings = IdentitySettings(credentials_file=wif_file(tmp_path, tokens))
    credentials, file = base_credentials(settings)
    assert file is not None
    assert file.audience == AUDIENCE
    assert tokens.subject_tokens == []  # no exchange (and no project lookup) at load time
    assert type(credentials).__module__ == "google.auth.identity_pool"
    assert (
        read_credential_file(settings.credentials_file or Path()).subject_token
        == f"file {tmp_path / 'token'}"
    )


def test_logging_names_no_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        principal = Principal(Identity(impersonate=READER), object())  # type: ignore[arg-type]
        principal.failed(
            iam_error(403, "PERMISSION_DENIED", f"denied {SUBJECT_CANARY}"), "projects/p/secrets/s"
        )
    assert SUBJECT_CANARY not in caplog.text
    assert "iam.serviceAccounts.getAccessToken" in caplog.text
