"""The identity settings (``gcp.credentials_file``, impersonation, delegation, ``iam_endpoint``, the quota
project, credentials to an endpoint, a secret's own identity): parsing, the rules across settings, client
keying, and what ``check-config`` says about them. Tables of cases; no network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config, GcpConfig, SecretSpec, load_config
from agent.config.refs import parse_ref
from agent.errors import ConfigError
from agent.sources.gcp import GcpSource
from agent.sources.identity_describe import describe_identities
from agent.sources.identity_model import Identity, IdentitySettings, read_credential_file

PROJECT = "my-project"
READER = "reader@my-project.iam.gserviceaccount.com"
OTHER = "payments@team-b.iam.gserviceaccount.com"
HOP = "hop@team-b.iam.gserviceaccount.com"
AUDIENCE = (
    "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/pool/providers/kind"
)
KEY_CANARY = "-----BEGIN PRIVATE KEY-----canary-4b1d-never-print-me-----END PRIVATE KEY-----"
CHAIN_ALONE = (
    "only used with {}.impersonate_service_account: a delegation chain leads to an impersonated account"
)
IAM_ALONE = (
    "only used to impersonate a service account (gcp.impersonate_service_account, or a secret's "
    "impersonate_service_account)"
)
PLAINTEXT = (
    "{} is not a loopback address, and the agent would send it access tokens in plaintext: set "
    "gcp.endpoint_tls, use a loopback address, or set gcp.endpoint_credentials: false"
)


def load(document: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    return load_config(None, env or {}, {}, document={"project": PROJECT, **document})


def problems(document: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load(document, env)
    return {p.path: p.message for p in caught.value.problems}


# --- one setting at a time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gcp", "field", "expected"),
    [
        ({"impersonate_service_account": READER}, "impersonate_service_account", READER),
        # The forms gcloud and IAM policies print are taken as the email they name.
        (
            {"impersonate_service_account": f"projects/-/serviceAccounts/{READER}"},
            "impersonate_service_account",
            READER,
        ),
        ({"impersonate_service_account": f"serviceAccount:{READER}"}, "impersonate_service_account", READER),
        (
            {
                "impersonate_service_account": READER,
                "delegates": [HOP, f"projects/-/serviceAccounts/{OTHER}"],
            },
            "delegates",
            (HOP, OTHER),
        ),
        (
            {"credentials_file": "/var/run/gcp/credentials.json"},
            "credentials_file",
            Path("/var/run/gcp/credentials.json"),
        ),
        ({"quota_project": "billing-project"}, "quota_project", "billing-project"),
        ({"endpoint": "127.0.0.1:8780", "endpoint_credentials": "true"}, "endpoint_credentials", True),
        ({"endpoint": "127.0.0.1:8780", "endpoint_credentials": False}, "endpoint_credentials", False),
        ({"endpoint": "emulator:8780", "endpoint_tls": "yes"}, "endpoint_tls", True),
        # A base URL is completed to the full generateAccessToken URL google-auth takes.
        (
            {"impersonate_service_account": READER, "iam_endpoint": "http://127.0.0.1:8781"},
            "iam_endpoint",
            "http://127.0.0.1:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        ),
        (
            {"impersonate_service_account": READER, "iam_endpoint": "https://iam.example.com/v1/"},
            "iam_endpoint",
            "https://iam.example.com/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        ),
        (
            {
                "impersonate_service_account": READER,
                "iam_endpoint": "http://[::1]:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            },
            "iam_endpoint",
            "http://[::1]:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        ),
    ],
)
def test_valid_identity_settings(gcp: dict[str, Any], field: str, expected: object) -> None:
    config = load({"gcp": gcp})
    assert getattr(config.gcp, field) == expected
    # check-config's output is itself a configuration that loads back to the same thing.
    assert load_config(None, {}, {}, document=config.to_dict()) == config


@pytest.mark.parametrize(
    ("gcp", "path", "message"),
    [
        (
            {"impersonate_service_account": "reader"},
            "gcp.impersonate_service_account",
            "expected a service account email",
        ),
        ({"impersonate_service_account": 7}, "gcp.impersonate_service_account", "expected a string"),
        (
            {"impersonate_service_account": READER, "delegates": "not an email"},
            "gcp.delegates",
            "item 0: expected a service account email",
        ),
        (
            {"impersonate_service_account": READER, "delegates": [HOP, HOP]},
            "gcp.delegates",
            f"item 1: {HOP} is already in the chain",
        ),
        (
            {
                "impersonate_service_account": READER,
                "delegates": [f"a{i}@x.iam.gserviceaccount.com" for i in range(17)],
            },
            "gcp.delegates",
            "at most 16 accounts",
        ),
        (
            {"impersonate_service_account": READER, "iam_endpoint": "ftp://iam"},
            "gcp.iam_endpoint",
            "expected an http(s) URL",
        ),
        (
            {"impersonate_service_account": READER, "iam_endpoint": "http://10.0.0.5:8781"},
            "gcp.iam_endpoint",
            "http:// only to a loopback address (10.0.0.5 is not one)",
        ),
        (
            {"impersonate_service_account": READER, "iam_endpoint": "https://user:pw@iam.example.com"},
            "gcp.iam_endpoint",
            "without user info",
        ),
        (
            {"impersonate_service_account": READER, "iam_endpoint": "https://iam.example.com/{}/{}"},
            "gcp.iam_endpoint",
            "expected one {}",
        ),
        (
            {"quota_project": "Billing Project"},
            "gcp.quota_project",
            "project id 'Billing Project' is invalid",
        ),
        ({"endpoint_credentials": "sometimes"}, "gcp.endpoint_credentials", "expected true or false"),
        ({"credentials_file": ""}, "gcp.credentials_file", "must not be empty"),
    ],
)
def test_invalid_identity_settings(gcp: dict[str, Any], path: str, message: str) -> None:
    found = problems({"gcp": gcp})
    assert message in found.pop(path), found
    assert found == {}


def test_every_identity_setting_has_its_variable() -> None:
    config = load(
        {},
        env={
            "SECRETS_AGENT_GCP_CREDENTIALS_FILE": "/var/run/gcp/credentials.json",
            "SECRETS_AGENT_GCP_IMPERSONATE_SERVICE_ACCOUNT": READER,
            "SECRETS_AGENT_GCP_DELEGATES": f"{HOP}, {OTHER}",
            "SECRETS_AGENT_GCP_IAM_ENDPOINT": "http://127.0.0.1:8781",
            "SECRETS_AGENT_GCP_QUOTA_PROJECT": "billing-project",
            "SECRETS_AGENT_GCP_ENDPOINT": "127.0.0.1:8780",
            "SECRETS_AGENT_GCP_ENDPOINT_CREDENTIALS": "false",
            "SECRETS_AGENT_GCP_ENDPOINT_TLS": "true",
        },
    )
    assert config.gcp.credentials_file == Path("/var/run/gcp/credentials.json")
    assert config.gcp.delegates == (HOP, OTHER)
    assert config.gcp.iam_endpoint == (
        "http://127.0.0.1:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken"
    )
    assert (config.gcp.endpoint_credentials, config.gcp.endpoint_tls) == (False, True)


def test_the_quota_project_falls_back_to_google_auths_own_variable() -> None:
    assert load({}, env={"GOOGLE_CLOUD_QUOTA_PROJECT": "from-google"}).gcp.quota_project == "from-google"
    ours = {"GOOGLE_CLOUD_QUOTA_PROJECT": "from-google", "SECRETS_AGENT_GCP_QUOTA_PROJECT": "ours-wins"}
    assert load({}, env=ours).gcp.quota_project == "ours-wins"


def test_a_secret_names_its_own_identity() -> None:
    config = load(
        {
            "secrets": [
                {"name": "db", "ref": "db"},
                {
                    "name": "theirs",
                    "ref": "projects/team-b/secrets/key",
                    "impersonate_service_account": OTHER,
                    "delegates": [HOP],
                },
            ]
        }
    )
    db, theirs = config.secrets
    assert (db.impersonate_service_account, db.delegates) == (None, ())
    assert (theirs.impersonate_service_account, theirs.delegates) == (OTHER, (HOP,))
    # Printed only where set: every secret does not grow two lines in check-config.
    printed = config.to_dict()["secrets"]
    assert isinstance(printed, list)
    assert "impersonate_service_account" not in printed[0]
    assert printed[1]["impersonate_service_account"] == OTHER
    assert printed[1]["delegates"] == [HOP]
    assert load_config(None, {}, {}, document=config.to_dict()) == config


# --- rules across settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"gcp": {"delegates": [HOP]}},
            {"gcp.delegates": CHAIN_ALONE.format("gcp")},
        ),
        (
            {"secrets": [{"name": "a", "ref": "a", "delegates": [HOP]}]},
            {"secrets[0].delegates": CHAIN_ALONE.format("secrets[0]")},
        ),
        (
            {"gcp": {"iam_endpoint": "http://127.0.0.1:8781"}},
            {"gcp.iam_endpoint": IAM_ALONE},
        ),
        # A token would cross the network in the clear.
        (
            {"gcp": {"endpoint": "10.1.2.3:8780", "credentials_file": "/creds.json"}},
            {"gcp.endpoint": PLAINTEXT.format("10.1.2.3")},
        ),
        (
            {"gcp": {"endpoint": "emulator:8780", "endpoint_credentials": True}},
            {"gcp.endpoint": PLAINTEXT.format("emulator")},
        ),
        (
            {
                "gcp": {"endpoint": "10.1.2.3:8780"},
                "secrets": [{"name": "a", "ref": "a", "impersonate_service_account": OTHER}],
            },
            {"gcp.endpoint": PLAINTEXT.format("10.1.2.3")},
        ),
    ],
)
def test_rules_across_identity_settings(document: dict[str, Any], expected: dict[str, str]) -> None:
    assert problems(document) == expected


@pytest.mark.parametrize(
    "gcp",
    [
        {"endpoint": "10.1.2.3:8780"},  # no identity: nothing is sent (today's emulator set-up)
        {"endpoint": "10.1.2.3:8780", "credentials_file": "/creds.json", "endpoint_tls": True},
        {"endpoint": "10.1.2.3:8780", "credentials_file": "/creds.json", "endpoint_credentials": False},
        {"endpoint": "127.0.0.1:8780", "credentials_file": "/creds.json"},
        {"endpoint": "[::1]:8780", "impersonate_service_account": READER},
        {"endpoint": "localhost:8780", "endpoint_credentials": True},
    ],
)
def test_endpoints_that_may_get_what_is_configured(gcp: dict[str, Any]) -> None:
    load({"gcp": gcp})


@pytest.mark.parametrize(
    ("gcp", "secrets", "sent"),
    [
        ({}, (), False),
        ({"endpoint": "127.0.0.1:1"}, (), False),
        ({"endpoint": "127.0.0.1:1", "credentials_file": "/c.json"}, (), True),
        ({"endpoint": "127.0.0.1:1", "impersonate_service_account": READER}, (), True),
        ({"endpoint": "127.0.0.1:1"}, (OTHER,), True),
        ({"endpoint": "127.0.0.1:1", "endpoint_credentials": True}, (), True),
        (
            {"endpoint": "127.0.0.1:1", "credentials_file": "/c.json", "endpoint_credentials": False},
            (),
            False,
        ),
    ],
)
def test_when_credentials_go_to_the_endpoint(
    gcp: dict[str, Any], secrets: tuple[str, ...], sent: bool
) -> None:
    specs = [
        {"name": f"s{i}", "ref": "s", "impersonate_service_account": who} for i, who in enumerate(secrets)
    ]
    config = load({"gcp": gcp, "secrets": specs})
    assert config.gcp.endpoint_gets_credentials(config.secrets) is sent
    assert IdentitySettings.from_config(config.gcp, config.secrets).endpoint_credentials is sent


# --- one client per (location, identity), never per secret --------------------------------------------------


def spec(name: str, ref: str, impersonate: str | None = None, delegates: tuple[str, ...] = ()) -> SecretSpec:
    return SecretSpec(
        name=name, ref=parse_ref(ref, PROJECT), impersonate_service_account=impersonate, delegates=delegates
    )


SPECS = [
    spec("a", "a"),
    spec("b", "b"),
    spec("eu", f"projects/{PROJECT}/locations/europe-west1/secrets/eu"),
    spec("theirs-1", "projects/team-b/secrets/one", OTHER),
    spec("theirs-2", "projects/team-b/secrets/two", OTHER),
    spec("theirs-eu", "projects/team-b/locations/europe-west1/secrets/three", OTHER),
    spec("chained", "projects/team-b/secrets/four", OTHER, (HOP,)),
]


@pytest.mark.parametrize(
    ("endpoint", "settings", "expected"),
    [
        # Google: a client per location and identity.
        (
            None,
            IdentitySettings(),
            {
                (None, Identity()),
                ("europe-west1", Identity()),
                (None, Identity(impersonate=OTHER)),
                ("europe-west1", Identity(impersonate=OTHER)),
                (None, Identity(impersonate=OTHER, delegates=(HOP,))),
            },
        ),
        (
            None,
            IdentitySettings(credentials_file=Path("/c.json"), impersonate=READER),
            {
                (None, Identity(Path("/c.json"), READER)),
                ("europe-west1", Identity(Path("/c.json"), READER)),
                (None, Identity(Path("/c.json"), OTHER)),
                ("europe-west1", Identity(Path("/c.json"), OTHER)),
                (None, Identity(Path("/c.json"), OTHER, (HOP,))),
            },
        ),
        # An endpoint serves every location: a client per identity.
        (
            "127.0.0.1:1",
            IdentitySettings(endpoint_credentials=True),
            {
                (None, Identity()),
                (None, Identity(impersonate=OTHER)),
                (None, Identity(impersonate=OTHER, delegates=(HOP,))),
            },
        ),
        # ...and one client for all when no credentials go there.
        ("127.0.0.1:1", IdentitySettings(), {(None, None)}),
    ],
)
def test_clients_are_keyed_by_location_and_identity(
    endpoint: str | None, settings: IdentitySettings, expected: set[tuple[str | None, Identity | None]]
) -> None:
    source = GcpSource(endpoint=endpoint, identity=settings)
    assert {source.key_of(s) for s in SPECS} == expected


# --- what check-config and the start log say ---------------------------------------------------------------


def external_account(tmp_path: Path, impersonate: str | None = None) -> Path:
    document: dict[str, Any] = {
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"file": "/var/run/secrets/tokens/gcp-token", "format": {"type": "text"}},
    }
    if impersonate:
        document["service_account_impersonation_url"] = (
            f"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{impersonate}:generateAccessToken"
        )
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(document))
    return path


def service_account_key(tmp_path: Path) -> Path:
    path = tmp_path / "key.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123abcd",
                "private_key": KEY_CANARY,
                "client_email": READER,
                "client_id": "1234",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


def described(document: dict[str, Any]) -> list[str]:
    lines = describe_identities(load(document))
    text = "\n".join(lines)
    assert "canary" not in text
    return lines


def test_check_config_names_application_default_credentials_by_default() -> None:
    assert described({}) == [
        "identity: Application Default Credentials",
        "quota project: none (each call counts against the project of its secret)",
    ]


def test_check_config_names_an_emulator_without_credentials() -> None:
    assert described({"gcp": {"endpoint": "127.0.0.1:8780", "quota_project": "billing-project"}}) == [
        "Secret Manager: the endpoint 127.0.0.1:8780 over plaintext gRPC, without credentials",
        "quota project: billing-project (sent as x-goog-user-project)",
    ]


def test_check_config_names_workload_identity_federation_and_impersonation(tmp_path: Path) -> None:
    path = external_account(tmp_path, impersonate=READER)
    lines = described(
        {
            "gcp": {"credentials_file": str(path), "quota_project": "billing-project"},
            "secrets": [
                {"name": "db", "ref": "db"},
                {
                    "name": "t1",
                    "ref": "projects/team-b/secrets/t1",
                    "impersonate_service_account": OTHER,
                    "delegates": [HOP],
                },
                {
                    "name": "t2",
                    "ref": "projects/team-b/secrets/t2",
                    "impersonate_service_account": OTHER,
                    "delegates": [HOP],
                },
            ],
        }
    )
    file = (
        f"credentials file {path} (external_account: Workload Identity Federation, audience {AUDIENCE}, "
        "subject token from file /var/run/secrets/tokens/gcp-token, "
        "exchanged at https://sts.googleapis.com/v1/token, "
        f"impersonating {READER} (service_account_impersonation_url))"
    )
    assert lines == [
        f"identity: {file}",
        f"identity of secrets t1, t2: {OTHER}, impersonated with {file} through {HOP}",
        "quota project: billing-project (sent as x-goog-user-project)",
    ]


def test_check_config_names_a_key_files_account_never_its_key(tmp_path: Path) -> None:
    path = service_account_key(tmp_path)
    lines = described(
        {
            "gcp": {
                "credentials_file": str(path),
                "impersonate_service_account": OTHER,
                "iam_endpoint": "http://127.0.0.1:8781",
            }
        }
    )
    assert lines[0] == (
        f"identity: {OTHER}, impersonated with credentials file {path} (service_account key of {READER})"
    )
    assert lines[1] == (
        "impersonation tokens from http://127.0.0.1:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken"
    )


def test_check_config_names_credentials_sent_to_an_endpoint(tmp_path: Path) -> None:
    lines = described(
        {"gcp": {"endpoint": "127.0.0.1:8780", "credentials_file": str(tmp_path / "absent.json")}}
    )
    assert lines[:2] == [
        "Secret Manager: the endpoint 127.0.0.1:8780 over plaintext gRPC on loopback, with credentials",
        f"identity: credentials file {tmp_path / 'absent.json'} (unusable: no such file)",
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "not JSON (a credential file is a JSON object)"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "magic"}', "type 'magic' is not one google-auth loads"),
        (b'{"private_key": "x"}', "type missing is not one google-auth loads"),
        (b" " * (1024 * 1024 + 1), "larger than 1 MiB: not a credential file"),
    ],
)
def test_an_unusable_credential_file_says_why_without_quoting_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "credentials.json"
    path.write_bytes(content)
    found = read_credential_file(path)
    assert found.problem is not None
    assert found.problem.startswith(problem)


def test_gcp_config_knows_an_explicit_identity() -> None:
    assert not GcpConfig().explicit_identity()
    assert GcpConfig(credentials_file=Path("/c.json")).explicit_identity()
    assert GcpConfig(impersonate_service_account=READER).explicit_identity()
    assert GcpConfig().explicit_identity([spec("t", "t", OTHER)])


# --- the rotation tooling reads the same settings with the same loader -------------------------------------


def test_the_rotation_config_takes_the_identity_settings() -> None:
    from agent.rotation.config import parse_rotation_config

    config = parse_rotation_config(
        {
            "project": PROJECT,
            "gcp": {
                "credentials_file": "/var/run/gcp/credentials.json",
                "impersonate_service_account": f"projects/-/serviceAccounts/{READER}",
                "delegates": HOP,
                "iam_endpoint": "http://127.0.0.1:8781",
                "quota_project": "billing-project",
            },
        }
    )
    assert config.gcp.impersonate_service_account == READER
    assert config.gcp.delegates == (HOP,)
    assert config.gcp.quota_project == "billing-project"
    assert (
        config.gcp.iam_endpoint
        == "http://127.0.0.1:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken"
    )
    assert IdentitySettings.from_config(config.gcp).base == Identity(
        Path("/var/run/gcp/credentials.json"), READER, (HOP,)
    )
    assert parse_rotation_config({"project": PROJECT}).gcp == GcpConfig()


NOT_AN_EMAIL = (
    "expected a service account email such as reader@my-project.iam.gserviceaccount.com, got 'reader'"
)
NOT_A_MAPPING = (
    "expected a mapping of credentials_file, impersonate_service_account, delegates, iam_endpoint, "
    "quota_project, got 'reader'"
)


@pytest.mark.parametrize(
    ("gcp", "expected"),
    [
        ({"delegates": [HOP]}, {"rot.yaml: gcp.delegates": CHAIN_ALONE.format("gcp")}),
        (
            {"impersonate_service_account": "reader"},
            {"rot.yaml: gcp.impersonate_service_account": NOT_AN_EMAIL},
        ),
        (
            {"endpoint": "127.0.0.1:8780"},
            {"rot.yaml: gcp.endpoint": "unknown key (did you mean 'iam_endpoint'?)"},
        ),
        ("reader", {"rot.yaml: gcp": NOT_A_MAPPING}),
    ],
)
def test_the_rotation_config_refuses_what_the_agent_refuses(gcp: object, expected: dict[str, str]) -> None:
    from agent.rotation.config import parse_rotation_config

    with pytest.raises(ConfigError) as caught:
        parse_rotation_config({"project": PROJECT, "gcp": gcp}, "rot.yaml")
    assert {p.path: p.message for p in caught.value.problems} == expected
