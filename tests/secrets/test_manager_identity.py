"""``SecretManager``'s identity arguments (the agent's ``gcp`` identity settings) against an emulator that
requires a token on every call: Workload Identity Federation through a credential configuration,
impersonation and delegation chains through IAM Credentials, the quota project as ``x-goog-user-project``;
google-auth unpatched, reaching the emulator through its own overrides. And the arguments checked by the
agent's loader, each problem named."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.errors import ConfigError
from agent.secrets import SecretManager, SecretsError
from agent.sources.identity import IdentitySettings
from agent_emulator.server import EmulatorEndpoints
from tests.emulator.conftest import FEDERATED, Idp
from tests.secrets.identity_world import (
    BILLING,
    HOP,
    LONELY,
    PROJECT,
    READER,
    TEAM,
    VALUES,
    World,
    identity_world,
)


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp(rsa.generate_private_key(public_exponent=65537, key_size=2048), "cluster-key-1")


@pytest.fixture
def world(idp: Idp, tmp_path: Path) -> Iterator[World]:
    with identity_world(tmp_path, idp) as found:
        yield found


def manager(world: World, **identity: object) -> SecretManager:
    """A SecretManager on the identity emulator, as the pod: its credential configuration, plus
    ``identity``."""
    arguments: dict[str, object] = {"credentials_file": world.credentials, **identity}
    if "impersonate_service_account" in identity:
        arguments.setdefault("iam_endpoint", world.endpoints.rest_url)
    return SecretManager(PROJECT, endpoint=world.endpoints.grpc_target, environ={}, **arguments)  # type: ignore[arg-type]


def all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


async def test_impersonating_a_service_account_reads_a_secret_billed_to_the_quota_project(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with manager(world, impersonate_service_account=READER, quota_project=BILLING) as sm:
        assert await sm.get_secret("db-password") == VALUES["db-password"]
        assert (await sm.resolve_version("db-password")).version == "1"

    reads = world.secret_manager_calls()
    assert [(c["method"], c["principal"], c["quota_project"], c["result"]) for c in reads] == [
        ("AccessSecretVersion", READER, BILLING, "OK"),
        ("GetSecretVersion", READER, BILLING, "OK"),
    ]
    # One exchange of the pod's token, one impersonation: the token serves every call.
    assert [(c["method"], c["principal"]) for c in world.calls("sts.googleapis.com")] == [
        ("ExchangeToken", FEDERATED)
    ]
    [minted] = world.calls("iamcredentials.googleapis.com")
    assert (minted["resource"], minted["principal"], minted["result"]) == (
        f"projects/-/serviceAccounts/{READER}",
        FEDERATED,
        "OK",
    )
    assert not world.leaks(all_logged(caplog))


async def test_a_delegation_chain_reaches_an_account_the_pod_cannot_impersonate_itself(world: World) -> None:
    async with manager(world, impersonate_service_account=TEAM, delegates=[HOP]) as sm:
        assert await sm.get_secret("other-team") == VALUES["other-team"]

    [read] = world.secret_manager_calls()
    assert (read["principal"], read["quota_project"]) == (TEAM, None)


async def test_the_federated_identity_itself_without_impersonation(world: World) -> None:
    async with manager(world) as sm:
        assert await sm.get_secret("db-password") == VALUES["db-password"]

    assert {c["principal"] for c in world.secret_manager_calls()} == {FEDERATED}
    assert not world.calls("iamcredentials.googleapis.com")


async def test_denied_impersonation_names_the_account_and_the_permission_never_a_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with manager(world, impersonate_service_account=LONELY) as sm:
        with pytest.raises(SecretsError) as caught:
            await sm.get_secret("db-password")

    message = str(caught.value)
    assert caught.value.code == "PERMISSION_DENIED"
    assert message.startswith(
        f"secret 'db-password': PERMISSION_DENIED: cannot impersonate {LONELY}: "
        "permission iam.serviceAccounts.getAccessToken denied"
    )
    assert f"(hint: grant roles/iam.serviceAccountTokenCreator on {LONELY} to " in message
    assert "\n" not in message
    assert not world.leaks(message)
    assert not world.leaks(all_logged(caplog))
    # Refused before Secret Manager was called, and not retried: a denial is permanent.
    assert not world.secret_manager_calls()
    assert len(world.calls("iamcredentials.googleapis.com")) == 1


async def test_a_refused_quota_project_names_it_and_the_role(world: World) -> None:
    async with manager(world, impersonate_service_account=READER, quota_project="someone-elses") as sm:
        with pytest.raises(SecretsError) as caught:
            await sm.get_secret("db-password")

    assert caught.value.code == "PERMISSION_DENIED"
    assert "PERMISSION_DENIED: quota project someone-elses refused" in str(caught.value)
    assert (
        f"(hint: grant roles/serviceusage.serviceUsageConsumer on project someone-elses to {READER}"
        in str(caught.value)
    )


async def test_without_credentials_to_the_endpoint_the_emulator_refuses(world: World) -> None:
    async with manager(world, impersonate_service_account=READER, endpoint_credentials=False) as sm:
        with pytest.raises(SecretsError) as caught:
            await sm.get_secret("db-password")

    assert caught.value.code == "UNAUTHENTICATED"
    assert not world.calls("sts.googleapis.com")  # nothing was exchanged: no credentials were wanted


async def test_the_quota_project_reaches_the_emulator_without_credentials(
    emulator: EmulatorEndpoints,
) -> None:
    """No identity: plaintext gRPC without credentials, and the header itself (as the agent sends it)."""
    import requests

    environ = {"GOOGLE_CLOUD_QUOTA_PROJECT": "env-billing"}
    async with SecretManager("p", endpoint=emulator.grpc_target, environ=environ) as sm:
        assert sm.identity.quota_project == "env-billing"
        assert not sm.identity.endpoint_credentials
        with pytest.raises(SecretsError):
            await sm.get_secret("missing")
    answer = await asyncio.to_thread(requests.get, f"{emulator.admin_url}/calls", timeout=10)
    calls = answer.json()["calls"]
    assert [(c["method"], c["principal"], c["quota_project"]) for c in calls] == [
        ("AccessSecretVersion", None, "env-billing")
    ]


# --- the arguments, checked by the agent's loader ----------------------------------------------------------


def test_the_arguments_resolve_as_the_agents_gcp_section() -> None:
    sm = SecretManager(
        "p",
        endpoint="127.0.0.1:8780",
        credentials_file="/var/run/gcp/credentials.json",
        impersonate_service_account=f"projects/-/serviceAccounts/{TEAM}",
        delegates=[HOP],
        iam_endpoint="http://127.0.0.1:8781",
        quota_project=BILLING,
        environ={"GOOGLE_CLOUD_QUOTA_PROJECT": "not-this-one"},
    )
    assert sm.identity == IdentitySettings(
        credentials_file=Path("/var/run/gcp/credentials.json"),
        impersonate=TEAM,
        delegates=(HOP,),
        iam_endpoint="http://127.0.0.1:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        quota_project=BILLING,
        endpoint_credentials=True,
    )
    # Nothing given: Application Default Credentials, none sent to an emulator, no quota project.
    assert SecretManager("p", endpoint="127.0.0.1:8780", environ={}).identity == IdentitySettings()
    # The agent's variable first, then google-auth's; endpoint_credentials=True sends ADC's own.
    environ = {"SECRETS_AGENT_GCP_QUOTA_PROJECT": "our-billing", "GOOGLE_CLOUD_QUOTA_PROJECT": "google"}
    sm = SecretManager("p", endpoint="127.0.0.1:8780", endpoint_credentials=True, environ=environ)
    assert sm.identity == IdentitySettings(quota_project="our-billing", endpoint_credentials=True)


NOT_A_PROJECT = (
    "project id 'Not A Project' is invalid: expected 6-30 lowercase letters, digits or '-', starting with a "
    "letter and not ending with '-' (or a project number)"
)


@pytest.mark.parametrize(
    ("arguments", "environ", "expected"),
    [
        (
            {"impersonate_service_account": "reader"},
            {},
            {
                "SecretManager.impersonate_service_account": "expected a service account email such as "
                "reader@my-project.iam.gserviceaccount.com, got 'reader'"
            },
        ),
        (
            {"delegates": [HOP]},
            {},
            {
                "SecretManager.delegates": "only used with SecretManager.impersonate_service_account: a "
                "delegation chain leads to an impersonated account",
            },
        ),
        (
            {"impersonate_service_account": READER, "iam_endpoint": "http://10.0.0.7:8781"},
            {},
            {
                "SecretManager.iam_endpoint": "http:// only to a loopback address (10.0.0.7 is not one): the "
                "request carries an access token, use https://",
            },
        ),
        (
            {"quota_project": "Not A Project"},
            {},
            {"SecretManager.quota_project": NOT_A_PROJECT},
        ),
        (
            {},
            {"GOOGLE_CLOUD_QUOTA_PROJECT": "Not A Project"},
            {"GOOGLE_CLOUD_QUOTA_PROJECT": NOT_A_PROJECT},
        ),
        (
            {"impersonate_service_account": READER, "endpoint": "10.0.0.7:8780"},
            {},
            {
                "SecretManager.endpoint": "10.0.0.7 is not a loopback address, and the manager would send it "
                "access tokens in plaintext: use an endpoint on a loopback address (an emulator on this "
                "machine), or pass endpoint_credentials=False"
            },
        ),
    ],
)
def test_invalid_arguments_are_one_config_error_naming_each(
    arguments: dict[str, object], environ: dict[str, str], expected: dict[str, str]
) -> None:
    arguments.setdefault("endpoint", "127.0.0.1:8780")
    with pytest.raises(ConfigError) as caught:
        SecretManager("p", environ=environ, **arguments)  # type: ignore[arg-type]
    assert {p.path: p.message for p in caught.value.problems} == expected


def test_an_endpoint_off_loopback_is_fine_when_no_credentials_go_there() -> None:
    sm = SecretManager(
        "p", endpoint="10.0.0.7:8780", impersonate_service_account=READER, endpoint_credentials=False
    )
    assert not sm.identity.endpoint_credentials
    assert SecretManager("p", endpoint="10.0.0.7:8780", environ={}).identity == IdentitySettings()
