"""Identity end to end: the real ``secrets-agent init``/``run``/``check-config`` processes against an emulator
that requires a token on every Secret Manager call (``require_auth``), exchanges Kubernetes-style subject
tokens at its STS (``POST /v1/token``), impersonates through its IAM Credentials (``generateAccessToken``)
and checks ``x-goog-user-project``.

google-auth runs unpatched inside the agent: it reaches the emulator through its own overrides only (the
credential file's ``token_url``, the agent's ``gcp.iam_endpoint`` -> ``iam_endpoint_override``). The
subject tokens are JWTs signed by a key of the test's own (a cluster's service account issuer), written to
a file as the kubelet writes a projected service account token. What the tests look at is what a user
sees: the files, the exit status, the log lines, and the emulator's log of calls (who called, billed to
which project, with what result).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from google.auth.transport.grpc import AuthMetadataPlugin
from google.auth.transport.requests import Request
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.e2e.conftest import (
    AGENT_OUTPUTS,
    AgentProcess,
    Agents,
    Finished,
    agent_environment,
    data_target,
    read_file,
)
from tests.k8s import render

PROJECT = "my-project"
PROJECT_NUMBER = "123456789012"
POOL = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/my-cluster-pool"
PROVIDER = f"{POOL}/providers/my-cluster"
AUDIENCE = f"//iam.googleapis.com/{PROVIDER}"
"""The credential configuration's ``audience`` (what STS is told the token is for)."""
TOKEN_AUDIENCE = f"https://iam.googleapis.com/{PROVIDER}"
"""The projected token's ``aud``: the provider's default allowed audience."""
ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:shop:checkout"
FEDERATED = f"principal://iam.googleapis.com/{POOL}/subject/{SUBJECT}"

READER = f"secrets-reader@{PROJECT}.iam.gserviceaccount.com"
HOP_A = f"hop-a@{PROJECT}.iam.gserviceaccount.com"
HOP_B = f"hop-b@{PROJECT}.iam.gserviceaccount.com"
PAYMENTS = f"payments-reader@{PROJECT}.iam.gserviceaccount.com"
LONELY = f"lonely@{PROJECT}.iam.gserviceaccount.com"
ADMIN = f"admin@{PROJECT}.iam.gserviceaccount.com"

VALUES = {
    "database-url": "database-url-value-5e1c-if-you-read-this-it-leaked",
    "api-key": "api-value-77a0-if-you-read-this-it-leaked",
    "payments-key": "payments-value-0c3d-if-you-read-this-it-leaked",
}
"""Seeded secret values: none may ever appear in anything an agent printed."""
ROTATED = "database-url-value-2-9f0b-if-you-read-this-it-leaked"
"""A version added while an agent runs (also never printed)."""
TOKEN_LIFETIME = 200
"""Seconds the emulator's STS tokens live at most: under google-auth's 225 s early-refresh threshold, so
the agent refreshes (re-reading the token file) before every call. Real tokens live an hour; this makes
the rotation tests take seconds instead."""


# --------------------------------------------------------------------------------------------------
# The cluster's token issuer and the emulator
# --------------------------------------------------------------------------------------------------


@dataclass
class Issuer:
    """A Kubernetes service account issuer: signs the projected tokens the kubelet writes."""

    key: rsa.RSAPrivateKey
    kid: str = "cluster-key-1"

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()

        def b64(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": b64(numbers.n),
                    "e": b64(numbers.e),
                }
            ]
        }

    def token(self, *, issued: float, lifetime: float, audience: str = TOKEN_AUDIENCE) -> str:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        payload = {
            "iss": ISSUER,
            "sub": SUBJECT,
            "aud": audience,
            "iat": int(issued),
            "exp": int(issued + lifetime),
            "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "checkout"}},
        }
        encoded: bytes = jwt.encode(crypt.RSASigner.from_string(pem, key_id=self.kid), payload)
        return encoded.decode()


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def identity_config(issuer: Issuer) -> dict[str, Any]:
    """Who the emulator trusts and who may do what (agent_emulator.identity_config)."""
    pool_members = f"principalSet://iam.googleapis.com/{POOL}/*"
    return {
        "require_auth": True,
        "token_lifetime_seconds": TOKEN_LIFETIME,
        "providers": {PROVIDER: {"issuer": ISSUER, "jwks": issuer.jwks()}},
        "service_accounts": {
            READER: {"token_creators": [pool_members]},
            HOP_A: {"token_creators": [pool_members]},
            HOP_B: {"token_creators": [HOP_A]},
            PAYMENTS: {"token_creators": [HOP_B]},
            LONELY: {},
            ADMIN: {},
        },
        "access": [
            {
                "principal": FEDERATED,
                "secrets": [
                    f"projects/{PROJECT}/secrets/database-url",
                    f"projects/{PROJECT}/secrets/api-key",
                ],
                "role": "accessor",
            },
            {
                "principal": READER,
                "secrets": [
                    f"projects/{PROJECT}/secrets/database-url",
                    f"projects/{PROJECT}/secrets/api-key",
                ],
                "role": "accessor",
            },
            {
                "principal": PAYMENTS,
                "secrets": [f"projects/{PROJECT}/secrets/payments-key"],
                "role": "accessor",
            },
            {"principal": ADMIN, "secrets": "*", "role": "admin"},
        ],
        "quota_projects": {
            "platform-billing": [FEDERATED, READER, PAYMENTS],
            "my-platform-project": [FEDERATED],
        },
    }


@dataclass
class Emulator:
    """The test's emulator: its endpoints, its admin API, an official client authenticated as ADMIN."""

    endpoints: EmulatorEndpoints
    client: secretmanager_v1.SecretManagerServiceClient
    advanced: float = 0.0
    """Seconds the test moved the emulator's clock forward."""

    def admin(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoints.admin_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def calls(self, service: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.admin("GET", "/calls?limit=1000")["calls"]
        return [c for c in found if service is None or c["service"] == service]

    def now(self) -> float:
        """The emulator's clock (it is advanced by tests; subject tokens are checked against it)."""
        return time.time() + self.advanced

    def advance(self, seconds: float) -> None:
        self.admin("POST", "/clock:advance", {"seconds": seconds})
        self.advanced += seconds

    def add_version(self, secret: str, value: str) -> str:
        version = self.client.add_secret_version(
            request={"parent": f"projects/{PROJECT}/secrets/{secret}", "payload": {"data": value.encode()}}
        )
        return str(version.name.rsplit("/", 1)[-1])


def admin_client(endpoints: EmulatorEndpoints, token: str) -> secretmanager_v1.SecretManagerServiceClient:
    """The official client with a static token (minted by the admin API), over local credentials."""
    credentials = google.oauth2.credentials.Credentials(token)
    plugin = AuthMetadataPlugin(credentials, Request())
    channel_credentials = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.metadata_call_credentials(plugin)
    )
    channel = grpc.secure_channel(endpoints.grpc_target, channel_credentials)
    return secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=channel)
    )


@pytest.fixture
def emulator(issuer: Issuer, tmp_path: Path) -> Iterator[Emulator]:
    identity = tmp_path / "identity.yaml"
    identity.write_text(yaml.safe_dump(identity_config(issuer)))
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        yaml.safe_dump(
            {"project": PROJECT, "secrets": {name: {"versions": [v]} for name, v in VALUES.items()}}
        )
    )
    options = EmulatorOptions(grpc_port=0, http_port=0, identity=identity, seed=seed)
    with running_emulator(options) as endpoints:
        client = admin_client(endpoints, mint_token(endpoints, ADMIN))
        try:
            yield Emulator(endpoints, client)
        finally:
            client.transport.close()


def mint_token(endpoints: EmulatorEndpoints, principal: str) -> str:
    """An access token for ``principal`` from the emulator's admin API (``POST /emulator/v1/tokens``)."""
    body = json.dumps({"principal": principal, "lifetime_seconds": 3600}).encode()
    request = urllib.request.Request(
        f"{endpoints.admin_url}/tokens",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        token: str = json.loads(response.read())["access_token"]
        return token


@pytest.fixture
def agents(emulator: Emulator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Agents]:
    """Agent processes against the identity emulator; no secret value may appear in what they print."""
    logs = tmp_path / "agent-logs"
    logs.mkdir()
    launcher = Agents(agent_environment(emulator.endpoints.grpc_target), tmp_path, request.node.nodeid, logs)
    try:
        yield launcher
    finally:
        launcher.close()
    printed = [o.stdout + o.stderr for o in AGENT_OUTPUTS if o.test == request.node.nodeid]
    values = {**VALUES, "rotated": ROTATED}
    leaked = [name for name, value in values.items() for text in printed if value in text]
    assert not leaked, f"secret values appeared in the agent's output: {leaked}"


# --------------------------------------------------------------------------------------------------
# The pod's files: the projected token, the credential configuration, the agent's config
# --------------------------------------------------------------------------------------------------


@dataclass
class Pod:
    """What a pod on a non-GKE cluster has: a projected token file and a credential configuration."""

    token_file: Path
    credentials: Path
    output_dir: Path

    def write_token(self, token: str) -> None:
        """As the kubelet rotates a projected token: the new file swapped in whole."""
        staged = self.token_file.with_name(".token.new")
        staged.write_text(token)
        staged.replace(self.token_file)


def credential_configuration(
    endpoints: EmulatorEndpoints, token_file: Path, impersonate: str | None = None
) -> dict[str, Any]:
    """What ``gcloud iam workload-identity-pools create-cred-config`` writes, ``token_url`` (and the
    impersonation URL) pointed at the emulator."""
    document: dict[str, Any] = {
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": endpoints.token_url,
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
    }
    if impersonate is not None:
        document["service_account_impersonation_url"] = endpoints.impersonation_url(impersonate)
    return document


@pytest.fixture
def pod(emulator: Emulator, issuer: Issuer, tmp_path: Path, output_dir: Path) -> Pod:
    token_file = tmp_path / "var-run-secrets-tokens" / "gcp-token"
    token_file.parent.mkdir()
    credentials = tmp_path / "gcp-credentials.json"
    credentials.write_text(json.dumps(credential_configuration(emulator.endpoints, token_file)))
    found = Pod(token_file, credentials, output_dir)
    found.write_token(issuer.token(issued=emulator.now(), lifetime=3600))
    return found


def agent_config(pod: Pod, path: Path, *secrets: dict[str, Any], **gcp: Any) -> Path:
    document = {
        "output_dir": str(pod.output_dir),
        "poll_interval": "300ms",
        "poll_jitter": 0,
        "timeout": "20s",
        "gcp": {
            "credentials_file": str(pod.credentials),
            "backoff_initial": "50ms",
            "backoff_max": "200ms",
            **gcp,
        },
        "secrets": list(secrets) or [secret("database-url"), secret("api-key")],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def secret(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "ref": f"projects/{PROJECT}/secrets/{name}", **settings}


def served(pod: Pod, name: str) -> bytes | None:
    return read_file(pod.output_dir, name)


def start_run(agents: Agents, config: Path) -> AgentProcess:
    agent = agents.start("run", "-c", config)
    agent.wait_for_log("run: serving", within=20)
    return agent


def calls_after(emulator: Emulator, mark: int, service: str | None = None) -> list[dict[str, Any]]:
    return [c for c in emulator.calls()[mark:] if service is None or c["service"] == service]


# --------------------------------------------------------------------------------------------------
# Workload Identity Federation with a projected token the kubelet rotates
# --------------------------------------------------------------------------------------------------


def test_a_projected_token_rotated_by_the_kubelet_keeps_the_agent_authenticated(
    agents: Agents, emulator: Emulator, issuer: Issuer, pod: Pod, tmp_path: Path
) -> None:
    # The first token lives 100 s; the agent exchanges it (STS) and reads with the federated token.
    pod.write_token(issuer.token(issued=emulator.now(), lifetime=100))
    agent = start_run(agents, agent_config(pod, tmp_path / "agent.yaml"))
    assert served(pod, "database-url") == VALUES["database-url"].encode()
    exchanges = [c for c in emulator.calls("sts.googleapis.com") if c["result"] == "OK"]
    assert exchanges
    assert {c["principal"] for c in exchanges} == {FEDERATED}
    reads = emulator.calls("secretmanager.googleapis.com")
    assert {(c["principal"], c["result"]) for c in reads} == {(FEDERATED, "OK")}

    # The kubelet writes a new token (valid 300 s); then 200 s pass: the first one is now expired (with
    # STS's minute of tolerance), so only a re-read file can keep the agent authenticated.
    pod.write_token(issuer.token(issued=emulator.now(), lifetime=300))
    emulator.advance(200)
    mark = len(emulator.calls())
    version = emulator.add_version("database-url", ROTATED)
    agent.wait_until(
        lambda: served(pod, "database-url") == ROTATED.encode(),
        within=15,
        what=f"database-url version {version} served",
    )
    after = calls_after(emulator, mark)
    assert [c for c in after if c["service"] == "sts.googleapis.com" and c["result"] == "OK"]
    assert all(c["result"] == "OK" for c in after), [c for c in after if c["result"] != "OK"]
    assert not agent.messages("ERROR"), agent.messages("ERROR")
    assert agent.alive()


def test_an_expired_token_is_one_clear_error_and_the_files_stay(
    agents: Agents, emulator: Emulator, issuer: Issuer, pod: Pod, tmp_path: Path
) -> None:
    pod.write_token(issuer.token(issued=emulator.now(), lifetime=100))
    agent = start_run(agents, agent_config(pod, tmp_path / "agent.yaml"))
    snapshot = data_target(pod.output_dir)

    # No new token arrives (a kubelet that stopped refreshing it) and 200 s pass.
    emulator.advance(200)
    line = agent.wait_for_log("no token for identity", within=15, severity="ERROR")
    assert (
        f"credentials file {pod.credentials} (external_account: Workload Identity Federation, "
        f"audience {AUDIENCE}" in line
    )
    assert (
        f"the token exchange refused the subject token from file {pod.token_file} for audience {AUDIENCE}"
        in line
    )
    assert "invalid_grant: ID Token issued at" in line
    assert "(hint: the subject token is expired or was issued for another audience" in line
    agent.wait_for_log("keeping the last known good value", within=10)
    # Last-known-good: the files stay, the snapshot is the same, the agent runs on.
    assert served(pod, "database-url") == VALUES["database-url"].encode()
    assert data_target(pod.output_dir) == snapshot
    assert agent.alive()
    assert len([m for m in agent.messages("ERROR") if "no token for identity" in m]) == 1  # said once

    # A fresh token: the agent recovers on its own.
    pod.write_token(issuer.token(issued=emulator.now(), lifetime=300))
    agent.wait_for_log("identity works again", within=15)
    for text in agent.messages():
        assert ".eyJ" not in text  # no token in any line
        assert "ya29." not in text


def failed_lines(result: Finished) -> list[str]:
    return [m for m in result.messages("ERROR") if m.startswith("required secret failed: ")]


def test_init_with_a_token_for_another_audience_exits_non_zero_listing_each_secret(
    agents: Agents, emulator: Emulator, issuer: Issuer, pod: Pod, tmp_path: Path
) -> None:
    config = agent_config(pod, tmp_path / "agent.yaml")
    assert agents.run("init", "-c", config).returncode == 0
    written = data_target(pod.output_dir)

    pod.write_token(
        issuer.token(issued=emulator.now(), lifetime=3600, audience="https://kubernetes.default.svc")
    )
    result = agents.run("init", "-c", config)

    assert result.returncode == 1
    lines = failed_lines(result)
    assert len(lines) == 2, result.messages()
    for name in ("database-url", "api-key"):
        [line] = [m for m in lines if f" {name} <- " in m]
        assert "UNAUTHENTICATED: the token exchange refused the subject token" in line
        assert f"for audience {AUDIENCE}" in line
        assert "does not match" in line  # STS's own words about the audience
    [identity_line] = [m for m in result.messages("ERROR") if "no token for identity" in m]
    assert AUDIENCE in identity_line
    assert "init failed: 2 of 2 required secret(s) could not be fetched" in result.messages("ERROR")
    # The files of the first init stay.
    assert data_target(pod.output_dir) == written
    assert served(pod, "api-key") == VALUES["api-key"].encode()


# --------------------------------------------------------------------------------------------------
# Impersonation, delegation, per-secret identities
# --------------------------------------------------------------------------------------------------


def test_impersonation_and_a_secret_of_another_team_through_a_delegation_chain(
    agents: Agents, emulator: Emulator, pod: Pod, tmp_path: Path
) -> None:
    config = agent_config(
        pod,
        tmp_path / "agent.yaml",
        secret("database-url"),
        secret("api-key"),
        secret("payments-key", impersonate_service_account=PAYMENTS, delegates=[HOP_A, HOP_B]),
        impersonate_service_account=READER,
        iam_endpoint=emulator.endpoints.rest_url,
    )
    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    for name in ("database-url", "api-key", "payments-key"):
        assert served(pod, name) == VALUES[name].encode()
    reads = {
        c["resource"].split("/secrets/")[1].split("/")[0]: c["principal"]
        for c in emulator.calls("secretmanager.googleapis.com")
    }
    assert reads == {"database-url": READER, "api-key": READER, "payments-key": PAYMENTS}
    minted = [c for c in emulator.calls("iamcredentials.googleapis.com") if c["result"] == "OK"]
    # One token per identity, however many secrets it serves.
    assert sorted(c["resource"] for c in minted) == sorted(
        [f"projects/-/serviceAccounts/{READER}", f"projects/-/serviceAccounts/{PAYMENTS}"]
    )
    [start] = [m for m in result.messages("INFO") if m.startswith("source: ")]
    assert f"identity: {READER}, impersonated with credentials file {pod.credentials}" in start
    assert f"identity of secret payments-key: {PAYMENTS}, impersonated with credentials file" in start
    assert f"through {HOP_A} -> {HOP_B}" in start


def test_a_credential_configuration_that_impersonates_a_service_account(
    agents: Agents, emulator: Emulator, pod: Pod, tmp_path: Path
) -> None:
    # `gcloud iam workload-identity-pools create-cred-config --service-account=...` writes the account into
    # the file (service_account_impersonation_url): google-auth impersonates it after the exchange.
    pod.credentials.write_text(
        json.dumps(credential_configuration(emulator.endpoints, pod.token_file, impersonate=READER))
    )
    config = agent_config(pod, tmp_path / "agent.yaml")
    checked = agents.run("check-config", config)
    assert f"impersonating {READER} (service_account_impersonation_url))" in checked.stdout

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert served(pod, "database-url") == VALUES["database-url"].encode()
    reads = emulator.calls("secretmanager.googleapis.com")
    assert {c["principal"] for c in reads} == {READER}


def test_denied_impersonation_names_the_account_and_the_permission(
    agents: Agents, emulator: Emulator, pod: Pod, tmp_path: Path
) -> None:
    config = agent_config(
        pod,
        tmp_path / "agent.yaml",
        impersonate_service_account=LONELY,
        iam_endpoint=emulator.endpoints.rest_url,
    )
    result = agents.run("init", "-c", config)

    assert result.returncode == 1
    lines = failed_lines(result)
    assert len(lines) == 2, result.messages()
    for line in lines:
        assert (
            f"PERMISSION_DENIED: cannot impersonate {LONELY}: "
            "permission iam.serviceAccounts.getAccessToken denied" in line
        )
        assert (
            f"(hint: grant roles/iam.serviceAccountTokenCreator on {LONELY} to the agent's own credentials)"
            in line
        )
    assert served(pod, "database-url") is None  # nothing invented, nothing half-written


# --------------------------------------------------------------------------------------------------
# The quota project
# --------------------------------------------------------------------------------------------------


def test_calls_carry_the_quota_project(agents: Agents, emulator: Emulator, pod: Pod, tmp_path: Path) -> None:
    config = agent_config(
        pod,
        tmp_path / "agent.yaml",
        secret("database-url"),
        secret("payments-key", impersonate_service_account=PAYMENTS, delegates=[HOP_A, HOP_B]),
        quota_project="platform-billing",
        iam_endpoint=emulator.endpoints.rest_url,
    )
    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    reads = emulator.calls("secretmanager.googleapis.com")
    assert {(c["principal"], c["quota_project"]) for c in reads} == {
        (FEDERATED, "platform-billing"),
        (PAYMENTS, "platform-billing"),
    }


def test_a_refused_quota_project_names_it_and_the_role(
    agents: Agents, emulator: Emulator, pod: Pod, tmp_path: Path
) -> None:
    config = agent_config(pod, tmp_path / "agent.yaml", quota_project="someone-elses-billing")
    result = agents.run("init", "-c", config)

    assert result.returncode == 1
    for line in failed_lines(result):
        assert "PERMISSION_DENIED: quota project someone-elses-billing refused" in line
        assert (
            "(hint: grant roles/serviceusage.serviceUsageConsumer on project someone-elses-billing to "
            f"the federated identity principal://iam.googleapis.com/{POOL}/subject/" in line
        )


# --------------------------------------------------------------------------------------------------
# check-config names the credential path
# --------------------------------------------------------------------------------------------------


def test_check_config_names_the_identity_and_the_quota_project_without_a_token(
    agents: Agents, emulator: Emulator, pod: Pod, tmp_path: Path
) -> None:
    config = agent_config(
        pod,
        tmp_path / "agent.yaml",
        secret("database-url"),
        secret("payments-key", impersonate_service_account=PAYMENTS, delegates=[HOP_A, HOP_B]),
        impersonate_service_account=READER,
        iam_endpoint=emulator.endpoints.rest_url,
        quota_project="platform-billing",
    )
    result = agents.run("check-config", config)

    assert result.returncode == 0, result.stderr
    comments = [line.removeprefix("# ") for line in result.stdout.splitlines() if line.startswith("# ")]
    endpoint = emulator.endpoints.grpc_target
    file = (
        f"credentials file {pod.credentials} (external_account: Workload Identity Federation, "
        f"audience {AUDIENCE}, subject token from file {pod.token_file}, "
        f"exchanged at {emulator.endpoints.token_url})"
    )
    assert comments == [
        f"Secret Manager: the endpoint {endpoint} over plaintext gRPC on loopback, with credentials",
        f"identity: {READER}, impersonated with {file}",
        f"identity of secret payments-key: {PAYMENTS}, impersonated with {file} through {HOP_A} -> {HOP_B}",
        f"impersonation tokens from {emulator.endpoints.rest_url}"
        "/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        "quota project: platform-billing (sent as x-goog-user-project)",
    ]
    token = pod.token_file.read_text()
    assert token not in result.stdout + result.stderr
    assert emulator.calls() == []  # check-config calls nobody


# --------------------------------------------------------------------------------------------------
# The example manifests (k8s/examples/workload-identity-federation, docs/identity.md) work as written
# --------------------------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "k8s" / "examples" / "workload-identity-federation"


def test_the_example_manifests_authenticate_as_written(
    agents: Agents, emulator: Emulator, issuer: Issuer, tmp_path: Path, output_dir: Path
) -> None:
    """The example's pieces fit together: the kubelet's token (the projected volume's audience) is what the
    credential configuration's pool provider accepts, the agent's config names that configuration, and the
    federated principal (the pod's ServiceAccount) reads the secrets, billed to the quota project. Only
    what cannot be the same offline is changed: Google's STS URL becomes the emulator's, and the paths
    inside the pod become local files."""
    docs = render.render(EXAMPLE)
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    [pod] = render.pod_specs(docs)
    [volume] = [v for v in pod.spec["volumes"] if "projected" in v]
    [source] = volume["projected"]["sources"]
    audience = source["serviceAccountToken"]["audience"]
    account = pod.spec["serviceAccountName"]
    credentials = json.loads(config_map["data"]["credentials.json"])
    agent = yaml.safe_load(config_map["data"]["agent.yaml"])
    # Where the pod has them: the token under the projected volume's mount, the files under the config's.
    sidecar = next(c for c in render.containers(pod.spec) if c.name == "secrets-agent").spec
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert (
        credentials["credential_source"]["file"]
        == f"{mounts[volume['name']]}/{source['serviceAccountToken']['path']}"
    )
    assert agent["gcp"]["credentials_file"] == f"{mounts['agent-config']}/credentials.json"
    assert credentials["audience"] == "//iam.googleapis.com/" + audience.removeprefix(
        "https://iam.googleapis.com/"
    )
    assert f"system:serviceaccount:shop:{account}" == SUBJECT

    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(issued=emulator.now(), lifetime=3600, audience=audience))
    credentials.update(token_url=emulator.endpoints.token_url)
    credentials["credential_source"]["file"] = str(token_file)
    local_credentials = tmp_path / "credentials.json"
    local_credentials.write_text(json.dumps(credentials))
    agent.update(output_dir=str(output_dir), require_tmpfs=False, probes={"listen": "127.0.0.1:0"})
    agent["gcp"]["credentials_file"] = str(local_credentials)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(agent))

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert read_file(output_dir, "database-url") == VALUES["database-url"].encode()
    assert read_file(output_dir, "api-key") == VALUES["api-key"].encode()
    reads = emulator.calls("secretmanager.googleapis.com")
    assert {(c["principal"], c["quota_project"], c["result"]) for c in reads} == {
        (FEDERATED, agent["gcp"]["quota_project"], "OK")
    }
