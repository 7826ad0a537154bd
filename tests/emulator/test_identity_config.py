"""The identity config, loaded strictly: every problem reported at once with its path, key material never
quoted; the ``--identity`` flag; and the pure pieces (principal patterns, secret patterns, JWT checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.errors import ConfigError
from agent_emulator import jwt_verify
from agent_emulator.cli import parse_options
from agent_emulator.identity_config import (
    IdentityConfig,
    check_principal,
    check_principal_pattern,
    load_identity_config,
    matches,
    parse_identity_config,
)
from agent_emulator.jwt_verify import JwtRejected
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import running_emulator
from tests.emulator.conftest import (
    DEFAULT_TOKEN_AUDIENCE,
    FEDERATED,
    ISSUER,
    POOL,
    POOL_SET,
    PROJECT,
    PROVIDER,
    READER,
    Idp,
    identity_config,
)

EXAMPLE = """\
# identity.yaml - start the emulator with: secrets-agent emulator --identity identity.yaml
require_auth: true                 # every Secret Manager call needs a token (default: false)
token_lifetime_seconds: 3600       # STS tokens live at most this long, never past the subject token's exp
max_token_lifetime_seconds: 3600   # longest generateAccessToken lifetime (up to 43200)

providers:
  # The workload identity pool provider a cluster's projected service-account tokens are exchanged at.
  projects/123456/locations/global/workloadIdentityPools/dev-pool/providers/kind:
    issuer: https://kubernetes.default.svc.cluster.local    # the tokens' iss claim (https only)
    jwks_file: cluster-jwks.json       # kubectl get --raw /openid/v1/jwks > cluster-jwks.json
    # allowed_audiences: [...]         # default: https://iam.googleapis.com/projects/123456/...
    allowed_subjects: ["system:serviceaccount:prod:*"]      # optional stand-in for an attribute condition

service_accounts:
  # generateAccessToken mints tokens for these; token_creators hold iam.serviceAccounts.getAccessToken.
  app-reader@demo-project.iam.gserviceaccount.com:
    token_creators:
      - principalSet://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/dev-pool/*
  team-b-reader@demo-project.iam.gserviceaccount.com:
    token_creators: [app-reader@demo-project.iam.gserviceaccount.com]   # a delegation hop
  deployer@demo-project.iam.gserviceaccount.com: {}

access:
  # Secret Manager IAM bindings: principal(s), secret names or patterns, role.
  - principal: app-reader@demo-project.iam.gserviceaccount.com
    secrets: ["projects/demo-project/secrets/app-*"]
    role: accessor                   # versions.access, versions.get, secrets.get
  - principal: team-b-reader@demo-project.iam.gserviceaccount.com
    secrets: ["projects/demo-project/secrets/team-b-*"]
    role: accessor
  - principals:
      - principal://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/dev-pool/subject/system:serviceaccount:prod:direct
    secrets: ["projects/demo-project/secrets/app-config"]
    role: accessor                   # a federated identity may be granted access directly, too
  - principals: [deployer@demo-project.iam.gserviceaccount.com]
    secrets: "*"
    role: admin                      # everything

quota_projects:
  # Who may bill calls to a project with x-goog-user-project. With impersonation, google-auth sends the
  # header on generateAccessToken too (with the federated token): list the pool as well.
  billing-project:
    - app-reader@demo-project.iam.gserviceaccount.com
    - team-b-reader@demo-project.iam.gserviceaccount.com
    - principalSet://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/dev-pool/*
"""
"""The complete example of the emulator docs (docs/emulator.md, "Identity"), verbatim."""


def problems(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as raised:
        parse_identity_config(data)
    return [(p.path, p.message) for p in raised.value.problems]


def paths(data: Any) -> list[str]:
    return [path for path, _ in problems(data)]


def test_the_documented_example_loads(tmp_path: Path, idp: Idp) -> None:
    (tmp_path / "cluster-jwks.json").write_text(json.dumps(idp.jwks()))
    path = tmp_path / "identity.yaml"
    path.write_text(EXAMPLE)
    config = load_identity_config(path)
    assert config.require_auth
    pool = "projects/123456/locations/global/workloadIdentityPools/dev-pool"
    provider = config.providers[f"{pool}/providers/kind"]
    assert provider.issuer == ISSUER
    assert provider.keys[0].kid == "key-1"
    assert provider.audiences == (
        f"https://iam.googleapis.com/{pool}/providers/kind",
        f"//iam.googleapis.com/{pool}/providers/kind",
    )
    assert provider.allowed_subjects == ("system:serviceaccount:prod:*",)
    app = "app-reader@demo-project.iam.gserviceaccount.com"
    team_b = "team-b-reader@demo-project.iam.gserviceaccount.com"
    pod = f"principal://iam.googleapis.com/{pool}/subject/system:serviceaccount:prod:app"
    assert config.may_create_tokens(pod, app)
    assert config.may_create_tokens(app, team_b)
    assert not config.may_create_tokens(pod, team_b)
    accessor = {"secretmanager.versions.access", "secretmanager.versions.get", "secretmanager.secrets.get"}
    assert config.permissions(app, "projects/demo-project/secrets/app-db", None) == accessor
    assert config.permissions(app, "projects/demo-project/secrets/team-b-db", None) == frozenset()
    direct = f"principal://iam.googleapis.com/{pool}/subject/system:serviceaccount:prod:direct"
    assert config.permissions(direct, "projects/demo-project/secrets/app-config", None) == accessor
    deployer = "deployer@demo-project.iam.gserviceaccount.com"
    assert "secretmanager.secrets.create" in config.permissions(deployer, None, "projects/any")
    assert config.may_use_quota_project(app, "billing-project")
    assert config.may_use_quota_project(pod, "billing-project")
    assert not config.may_use_quota_project(deployer, "billing-project")


def test_nothing_is_the_default_and_requires_nothing() -> None:
    assert parse_identity_config(None) == IdentityConfig()
    assert parse_identity_config({}) == IdentityConfig()
    assert not IdentityConfig().require_auth


def test_unknown_keys_are_errors_at_every_level(idp: Idp) -> None:
    config = identity_config(idp, colour="blue")
    config["providers"][PROVIDER]["isuer"] = "x"
    config["service_accounts"][READER] = {"token_creator": []}
    config["access"][0]["roles"] = "admin"
    found = paths(config)
    assert found == [
        "colour",
        f"providers.{PROVIDER}.isuer",
        f"service_accounts.{READER}.token_creator",
        "access[0].roles",
    ]


def test_every_problem_is_reported_together(idp: Idp) -> None:
    found = problems(
        {
            "require_auth": "yes",
            "token_lifetime_seconds": 0,
            "max_token_lifetime_seconds": 50000,
            "providers": {
                "projects/abc/locations/global/workloadIdentityPools/p/providers/x": {"issuer": "http://x"},
                PROVIDER: {"issuer": ISSUER, "jwks": idp.jwks(), "public_key_pem": idp.public_pem},
            },
            "service_accounts": {"not-an-email": {}},
            "access": [{"principal": "x@y", "role": "owner"}, "nope"],
            "quota_projects": {
                "p/q": ["x@y"],
                "ok": ["principalSet://iam.googleapis.com/x/attribute.team/a"],
            },
        }
    )
    assert [path for path, _ in found] == [
        "require_auth",
        "token_lifetime_seconds",
        "max_token_lifetime_seconds",
        "providers.projects/abc/locations/global/workloadIdentityPools/p/providers/x",
        "providers.projects/abc/locations/global/workloadIdentityPools/p/providers/x.issuer",
        "providers.projects/abc/locations/global/workloadIdentityPools/p/providers/x",
        f"providers.{PROVIDER}",
        "service_accounts.not-an-email",
        "access[0].secrets",
        "access[0].role",
        "access[1]",
        "quota_projects.p/q",
        "quota_projects.ok[0]",
    ]
    messages = dict(found)
    assert messages["providers.projects/abc/locations/global/workloadIdentityPools/p/providers/x.issuer"] == (
        "Invalid OIDC issuer URI. The scheme must be https."
    )
    assert (
        "exactly one of jwks, jwks_file, public_key_pem, public_key_file" in messages[f"providers.{PROVIDER}"]
    )
    assert "whole pools" in messages["quota_projects.ok[0]"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"jwks": {"keys": []}}, "the JWKS has no keys"),
        ({"jwks": {"kty": "RSA"}}, 'a JWKS is a mapping {"keys": [...]}'),
        ({"jwks": "{not json"}, "the JWKS is not valid JSON"),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "keys[0].kty: expected RSA or EC"),
        (
            {"jwks": {"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}},
            "keys[0]: the key material is not a valid",
        ),
        ({"jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "PS256"}]}}, "keys[0].alg"),
        (
            {"jwks": {"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}},
            "keys[0].crv: only P-256",
        ),
        ({"public_key_pem": "-----BEGIN PUBLIC KEY-----\nQ0FOQVJZ\n-----END PUBLIC KEY-----"}, "PEM block 1"),
        ({"public_key_pem": "just text"}, "no PEM block found"),
        ({"public_key_file": "missing.pem"}, "cannot read"),
    ],
)
def test_bad_keys_are_named_without_their_material(
    keys: dict[str, Any], message: str, tmp_path: Path
) -> None:
    data = {"providers": {PROVIDER: {"issuer": ISSUER, **keys}}}
    with pytest.raises(ConfigError) as raised:
        parse_identity_config(data, tmp_path)
    (problem,) = raised.value.problems
    assert problem.path.startswith(f"providers.{PROVIDER}.")
    assert message in problem.message
    assert "Q0FOQVJZ" not in str(raised.value)


def test_small_rsa_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = Idp(rsa.generate_private_key(public_exponent=65537, key_size=1024), "small")
    found = problems({"providers": {PROVIDER: {"issuer": ISSUER, "jwks": small.jwks()}}})
    assert found == [
        (f"providers.{PROVIDER}.jwks", "keys[0]: an RSA key of 1024 bits; expected 2048 to 8192 bits")
    ]


def test_key_files_are_read_relative_to_the_config(tmp_path: Path, idp: Idp) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "sa.pub").write_text(idp.public_pem)
    path = tmp_path / "identity.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    f"//iam.googleapis.com/{PROVIDER}": {"issuer": ISSUER, "public_key_file": "keys/sa.pub"}
                }
            }
        )
    )
    config = load_identity_config(path)
    assert list(config.providers) == [PROVIDER]
    assert config.providers[PROVIDER].audiences[0] == DEFAULT_TOKEN_AUDIENCE


def test_a_bad_file_names_itself_and_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    path.write_text("require_auth: [\n")
    with pytest.raises(ConfigError, match=r"identity.yaml: not valid YAML at line 2"):
        load_identity_config(path)
    path.write_text("requre_auth: true\n")
    with pytest.raises(ConfigError) as raised:
        load_identity_config(path)
    assert str(raised.value) == (
        f"{path}: requre_auth: unknown key; expected one of: require_auth, token_lifetime_seconds, "
        "max_token_lifetime_seconds, providers, service_accounts, access, quota_projects"
    )
    with pytest.raises(ConfigError, match="cannot read the identity file"):
        load_identity_config(tmp_path / "missing.yaml")
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="an identity config is a mapping"):
        load_identity_config(path)


def test_sizes_are_bounded(idp: Idp) -> None:
    many: dict[str, Any] = {f"sa{i}@p.iam.gserviceaccount.com": {} for i in range(1001)}
    assert paths({"service_accounts": many}) == ["service_accounts"]
    long_issuer = {"providers": {PROVIDER: {"issuer": "https://" + "x" * 2000, "jwks": idp.jwks()}}}
    assert paths(long_issuer) == [f"providers.{PROVIDER}.issuer"]
    assert paths({"access": [{"principal": READER, "secrets": ["*"] * 1001}]}) == ["access[0].secrets"]


def test_the_flag_and_the_emulator_load_it(tmp_path: Path) -> None:
    assert parse_options(["--identity", "id.yaml"]).identity == Path("id.yaml")
    assert parse_options([]).identity is None
    bad = tmp_path / "identity.yaml"
    bad.write_text("providers: {nope: {}}\n")
    with (
        pytest.raises(ConfigError, match=r"providers\.nope"),
        running_emulator(EmulatorOptions(grpc_port=0, http_port=0, identity=bad)),
    ):
        pass


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        ("*", "*"),
        ("Reader@Demo.iam.gserviceaccount.com", "reader@demo.iam.gserviceaccount.com"),
        ("serviceAccount:reader@demo.iam.gserviceaccount.com", "reader@demo.iam.gserviceaccount.com"),
        ("user:dev@example.com", "dev@example.com"),
        (FEDERATED, FEDERATED),
        (POOL_SET, f"principal://iam.googleapis.com/{POOL}/subject/*"),
        (f"principal://iam.googleapis.com/{POOL}/subject/system:serviceaccount:prod:*", None),
        ("ci-*", None),
    ],
)
def test_principal_patterns_normalise(pattern: str, normalized: str | None) -> None:
    assert check_principal_pattern(pattern) == (normalized or pattern)


@pytest.mark.parametrize(
    "pattern",
    ["", "a b", "x*y@z", "principal://example.com/x", f"principalSet://iam.googleapis.com/{POOL}/group/g", 7],
)
def test_bad_principal_patterns_are_refused(pattern: Any) -> None:
    with pytest.raises(ValueError):
        check_principal_pattern(pattern)


def test_minted_principals_are_identities_not_patterns() -> None:
    assert check_principal(READER) == READER
    assert check_principal(FEDERATED) == FEDERATED
    for bad in ("*", POOL_SET, "ci-*", None, "x" * 2000):
        with pytest.raises(ValueError):
            check_principal(bad)


def test_matching() -> None:
    assert matches("*", "anyone")
    assert matches(f"principal://iam.googleapis.com/{POOL}/subject/*", FEDERATED)
    assert not matches(f"principal://iam.googleapis.com/{POOL}/subject/*", READER)
    assert matches(READER, READER)
    assert not matches(READER, READER + "x")


@pytest.mark.parametrize(
    ("patterns", "secret", "parent", "expected"),
    [
        (["*"], f"projects/{PROJECT}/secrets/a", None, True),
        (["*"], None, f"projects/{PROJECT}", True),
        ([f"projects/{PROJECT}/secrets/*"], f"projects/{PROJECT}/secrets/a", None, True),
        ([f"projects/{PROJECT}/secrets/*"], None, f"projects/{PROJECT}", True),
        ([f"projects/{PROJECT}/secrets/*"], f"projects/{PROJECT}/locations/eu/secrets/a", None, False),
        ([f"projects/{PROJECT}/*"], f"projects/{PROJECT}/locations/eu/secrets/a", None, True),
        ([f"projects/{PROJECT}/*"], None, f"projects/{PROJECT}/locations/eu", True),
        ([f"projects/{PROJECT}/secrets/db-*"], f"projects/{PROJECT}/secrets/db-main", None, True),
        ([f"projects/{PROJECT}/secrets/db-*"], None, f"projects/{PROJECT}", False),
        ([f"projects/{PROJECT}/secrets/a"], f"projects/{PROJECT}/secrets/ab", None, False),
        ([f"projects/{PROJECT}/secrets/a"], None, f"projects/{PROJECT}", False),
        ([f"projects/{PROJECT}/secrets/a"], "projects/other/secrets/a", None, False),
    ],
)
def test_secret_patterns(patterns: list[str], secret: str | None, parent: str | None, expected: bool) -> None:
    config = parse_identity_config({"access": [{"principal": READER, "secrets": patterns, "role": "admin"}]})
    granted = config.permissions(READER, secret, parent)
    assert bool(granted) is expected


def test_claims_are_checked_in_google_order() -> None:
    base = {"iss": ISSUER, "aud": "a", "iat": 1000, "exp": 2000}
    assert jwt_verify.check_claims(base, issuer=ISSUER, audiences=["a"], now=1500) == 2000
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "iss": None, "aud": None}, "The issuer in ID Token null does not match"),
        (
            {**base, "aud": ["b", "c"]},
            "The audience in ID Token [b, c] does not match the expected audience.",
        ),
        ({**base, "aud": 7}, "The audience in ID Token [] does not match"),
        ({**base, "exp": 1439}, "ID Token issued at 1000 is stale to sign-in."),
        ({**base, "exp": "soon"}, "ID Token issued at 1000 is stale to sign-in."),
        ({**base, "iat": True}, "ID Token issued at true is stale to sign-in."),
        ({**base, "nbf": 1600}, "is stale to sign-in"),
    ]
    for claims, message in cases:
        with pytest.raises(JwtRejected) as raised:
            jwt_verify.check_claims(claims, issuer=ISSUER, audiences=["a"], now=1500)
        assert message in raised.value.reason, claims
    huge = {**base, "aud": ["x" * 500] * 10}
    with pytest.raises(JwtRejected) as long_one:
        jwt_verify.check_claims(huge, issuer=ISSUER, audiences=["a"], now=1500)
    assert len(long_one.value.reason) < 1000
