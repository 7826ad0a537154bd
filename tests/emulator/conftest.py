"""Identity fixtures for the emulator tests: a test identity provider that signs subject tokens, an
emulator started with an identity config, and official clients authenticated by google-auth.

google-auth is never patched: it reaches the emulator through its own overrides (``token_url``,
``service_account_impersonation_url``, ``iam_endpoint_override``), and every HTTP request it makes goes
through :class:`LoopbackRequest`, which fails the test if it ever tries to leave 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import grpc
import pytest
import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.api_core.client_options import ClientOptions
from google.auth import crypt, jwt
from google.auth.credentials import Credentials
from google.auth.transport.grpc import AuthMetadataPlugin
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator

PROJECT = "demo-project"
PROJECT_NUMBER = "123456789012"
POOL = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/test-pool"
PROVIDER = f"{POOL}/providers/kind-cluster"
AUDIENCE = f"//iam.googleapis.com/{PROVIDER}"
"""The STS ``audience`` parameter (the credential config's ``audience``)."""
DEFAULT_TOKEN_AUDIENCE = f"https://iam.googleapis.com/{PROVIDER}"
"""What a subject token's ``aud`` is by default (Google's default allowed audience)."""
ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:prod:app"
FEDERATED = f"principal://iam.googleapis.com/{POOL}/subject/{SUBJECT}"
POOL_SET = f"principalSet://iam.googleapis.com/{POOL}/*"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"

READER = f"reader@{PROJECT}.iam.gserviceaccount.com"
DELEGATE_A = f"hop-a@{PROJECT}.iam.gserviceaccount.com"
DELEGATE_B = f"hop-b@{PROJECT}.iam.gserviceaccount.com"
TARGET = f"target@{PROJECT}.iam.gserviceaccount.com"
LONELY = f"lonely@{PROJECT}.iam.gserviceaccount.com"
ADMIN = f"admin@{PROJECT}.iam.gserviceaccount.com"
DIRECT = f"direct@{PROJECT}.iam.gserviceaccount.com"

SECRET = f"projects/{PROJECT}/secrets/db-password"
OTHER_SECRET = f"projects/{PROJECT}/secrets/other-team"
SEED = {
    "project": PROJECT,
    "secrets": {"db-password": {"versions": ["s3cret-v1"]}, "other-team": {"versions": ["theirs"]}},
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass
class Idp:
    """A test identity provider (what a cluster's service-account issuer is): it signs subject tokens."""

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    kid: str
    issuer: str = ISSUER

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": self.kid,
                "n": b64url(_int_bytes(numbers.n)),
                "e": b64url(_int_bytes(numbers.e)),
            }
        point = public.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "kid": self.kid,
            "x": b64url(point.x.to_bytes(32, "big")),
            "y": b64url(point.y.to_bytes(32, "big")),
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    def signer(self) -> crypt.Signer:
        signer: crypt.Signer
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            signer = crypt.RSASigner.from_string(self.private_pem, key_id=self.kid)
        else:
            signer = crypt.ES256Signer.from_string(self.private_pem, key_id=self.kid)
        return signer

    def token(self, *, lifetime: float = 3600, now: float | None = None, **claims: Any) -> str:
        """A subject token: iss, sub, aud (Google's default audience), iat, exp, then ``claims``
        (a claim given as None is left out)."""
        issued = time.time() if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": SUBJECT,
            "aud": DEFAULT_TOKEN_AUDIENCE,
            "iat": int(issued),
            "exp": int(issued + lifetime),
        }
        payload.update(claims)
        payload = {key: value for key, value in payload.items() if value is not None}
        encoded: bytes = jwt.encode(self.signer(), payload)
        return encoded.decode()


@pytest.fixture(scope="session")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    """Two RSA-2048 keys, made once (key generation is the slow part)."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture
def idp(rsa_keys: list[rsa.RSAPrivateKey]) -> Idp:
    """The provider's trusted signer."""
    return Idp(rsa_keys[0], "key-1")


@pytest.fixture
def rogue(rsa_keys: list[rsa.RSAPrivateKey]) -> Idp:
    """A signer nobody trusts, using the trusted key's ``kid``."""
    return Idp(rsa_keys[1], "key-1")


def identity_config(idp: Idp, **overrides: Any) -> dict[str, Any]:
    """The identity config most tests use (``overrides`` replace top-level keys)."""
    config: dict[str, Any] = {
        "require_auth": True,
        "providers": {PROVIDER: {"issuer": idp.issuer, "jwks": idp.jwks()}},
        "service_accounts": {
            READER: {"token_creators": [POOL_SET]},
            DELEGATE_A: {"token_creators": [POOL_SET]},
            DELEGATE_B: {"token_creators": [DELEGATE_A]},
            TARGET: {"token_creators": [DELEGATE_B]},
            LONELY: {},
            ADMIN: {},
        },
        "access": [
            {"principal": READER, "secrets": [SECRET], "role": "accessor"},
            {"principal": TARGET, "secrets": [f"projects/{PROJECT}/secrets/*"], "role": "accessor"},
            {"principal": FEDERATED, "secrets": [SECRET], "role": "accessor"},
            {"principals": [ADMIN], "secrets": "*", "role": "admin"},
        ],
        "quota_projects": {"billing-ok": [READER, POOL_SET, DIRECT]},
    }
    config.update(overrides)
    return config


StartEmulator = Callable[[dict[str, Any]], AbstractContextManager[EmulatorEndpoints]]


@pytest.fixture
def start_emulator(tmp_path: Path) -> StartEmulator:
    """``with start_emulator(config) as endpoints``: an emulator started with ``--identity`` (YAML) and the
    two seeded secrets."""

    @contextmanager
    def start(config: dict[str, Any]) -> Iterator[EmulatorEndpoints]:
        identity = tmp_path / "identity.yaml"
        identity.write_text(yaml.safe_dump(config))
        seed = tmp_path / "seed.yaml"
        seed.write_text(yaml.safe_dump(SEED))
        options = EmulatorOptions(grpc_port=0, http_port=0, identity=identity, seed=seed)
        with running_emulator(options) as endpoints:
            yield endpoints

    return start


@pytest.fixture
def identity_emulator(idp: Idp, start_emulator: StartEmulator) -> Iterator[EmulatorEndpoints]:
    """An emulator with :func:`identity_config` (``require_auth: true``)."""
    with start_emulator(identity_config(idp)) as endpoints:
        yield endpoints


class LoopbackRequest(google.auth.transport.requests.Request):
    """google-auth's own requests transport, refusing any URL off loopback: the tests stay offline."""

    def __call__(self, url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
        host = urllib.parse.urlsplit(url).hostname
        assert host in ("127.0.0.1", "localhost", "::1"), f"google-auth tried to reach {host}"
        return super().__call__(url, method, *args, **kwargs)


def authed_grpc_client(target: str, creds: Credentials) -> secretmanager_v1.SecretManagerServiceClient:
    """The official client over gRPC with google-auth call credentials (local channel credentials let
    them travel over plaintext loopback)."""
    plugin = AuthMetadataPlugin(creds, LoopbackRequest())
    channel_creds = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.metadata_call_credentials(plugin)
    )
    transport = SecretManagerServiceGrpcTransport(channel=grpc.secure_channel(target, channel_creds))
    return secretmanager_v1.SecretManagerServiceClient(transport=transport)


def authed_rest_client(base_url: str, creds: Credentials) -> secretmanager_v1.SecretManagerServiceClient:
    """The official client over REST with google-auth's AuthorizedSession."""
    return secretmanager_v1.SecretManagerServiceClient(
        transport="rest", credentials=creds, client_options=ClientOptions(api_endpoint=base_url)
    )


@dataclass
class Admin:
    """The emulator's admin API, as tests drive it."""

    endpoints: EmulatorEndpoints
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(f"{self.endpoints.admin_url}{path}", json=body, timeout=10)

    def token(self, principal: str, lifetime_seconds: int = 3600) -> str:
        response = self.post("/tokens", {"principal": principal, "lifetime_seconds": lifetime_seconds})
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def advance(self, seconds: float) -> None:
        assert self.post("/clock:advance", {"seconds": seconds}).status_code == 200

    def calls(self, limit: int = 100) -> list[dict[str, Any]]:
        response = self.session.get(f"{self.endpoints.admin_url}/calls", params={"limit": limit}, timeout=10)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["calls"]
        return found

    def counters_by_project(self) -> dict[str, Any]:
        response = self.session.get(
            f"{self.endpoints.admin_url}/counters", params={"by": "project"}, timeout=10
        )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["projects"]
        return found


@pytest.fixture
def admin(identity_emulator: EmulatorEndpoints) -> Iterator[Admin]:
    helper = Admin(identity_emulator)
    yield helper
    helper.session.close()


def credential_config(
    endpoints: EmulatorEndpoints, token_file: Path, impersonate: str | None = READER, **extra: Any
) -> dict[str, Any]:
    """An ``external_account`` credential configuration, as ``gcloud iam workload-identity-pools
    create-cred-config`` writes it, pointed at the emulator."""
    config: dict[str, Any] = {
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": JWT_TYPE,
        "token_url": endpoints.token_url,
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
    }
    if impersonate is not None:
        config["service_account_impersonation_url"] = endpoints.impersonation_url(impersonate)
    config.update(extra)
    return config


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path
