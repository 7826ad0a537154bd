"""IAM Credentials ``generateAccessToken``, reached by google-auth's impersonated credentials
(``iam_endpoint_override``) and by an ``external_account`` config's ``service_account_impersonation_url``:
the caller's token, each hop of a delegation chain, the target's existence, the lifetime, as Google checks
them and in its words."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import requests
from google.auth import exceptions as auth_exceptions
from google.auth import identity_pool, impersonated_credentials
from google.oauth2 import credentials as oauth2_credentials

from agent_emulator.server import EmulatorEndpoints
from tests.emulator.conftest import (
    CLOUD_PLATFORM,
    DELEGATE_A,
    DELEGATE_B,
    DIRECT,
    FEDERATED,
    LONELY,
    READER,
    SECRET,
    TARGET,
    Admin,
    Idp,
    LoopbackRequest,
    StartEmulator,
    authed_grpc_client,
    authed_rest_client,
    credential_config,
    identity_config,
    write_json,
)

DENIED = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."


def federated(endpoints: EmulatorEndpoints, idp: Idp, tmp_path: Path, impersonate: str | None = None) -> Any:
    token_file = tmp_path / "token"
    token_file.write_text(idp.token())
    config = credential_config(endpoints, token_file, impersonate=impersonate)
    return identity_pool.Credentials.from_file(
        str(write_json(tmp_path / "creds.json", config)), scopes=[CLOUD_PLATFORM]
    )


def impersonate(
    endpoints: EmulatorEndpoints,
    source: Any,
    target: str,
    delegates: list[str] | None = None,
    lifetime: int = 3600,
) -> impersonated_credentials.Credentials:
    return impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=target,
        target_scopes=[CLOUD_PLATFORM],
        delegates=[f"projects/-/serviceAccounts/{d}" for d in delegates or []],
        lifetime=lifetime,
        iam_endpoint_override=endpoints.impersonation_url(target),
    )


def generate(
    endpoints: EmulatorEndpoints, account: str, token: str | None, body: Any = None, **headers: str
) -> requests.Response:
    sent = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(
        endpoints.impersonation_url(account),
        json={"scope": [CLOUD_PLATFORM], "lifetime": "600s"} if body is None else body,
        headers={**sent, **headers},
        timeout=10,
    )


def read_secret(endpoints: EmulatorEndpoints, creds: Any) -> bytes:
    client = authed_grpc_client(endpoints.grpc_target, creds)
    try:
        data: bytes = client.access_secret_version(name=f"{SECRET}/versions/latest").payload.data
        return data
    finally:
        client.transport.close()


def test_an_external_account_config_impersonates_its_service_account(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, admin: Admin
) -> None:
    creds = federated(identity_emulator, idp, tmp_path, impersonate=READER)
    assert read_secret(identity_emulator, creds) == b"s3cret-v1"
    assert creds.service_account_email == READER
    exchanged, generated, accessed = admin.calls()[-3:]
    assert (exchanged["method"], exchanged["principal"]) == ("ExchangeToken", FEDERATED)
    assert generated["method"] == "GenerateAccessToken"
    assert generated["service"] == "iamcredentials.googleapis.com"
    assert generated["principal"] == FEDERATED
    assert generated["resource"] == f"projects/-/serviceAccounts/{READER}"
    assert (accessed["principal"], accessed["result"]) == (READER, "OK")


def test_the_same_config_works_over_rest(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path
) -> None:
    creds = federated(identity_emulator, idp, tmp_path, impersonate=READER)
    client = authed_rest_client(identity_emulator.rest_url, creds)
    try:
        assert client.access_secret_version(name=f"{SECRET}/versions/latest").payload.data == b"s3cret-v1"
    finally:
        client.transport.close()


def test_a_delegation_chain_reaches_the_target(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, admin: Admin
) -> None:
    source = federated(identity_emulator, idp, tmp_path)
    creds = impersonate(identity_emulator, source, TARGET, [DELEGATE_A, DELEGATE_B])
    creds.refresh(LoopbackRequest())
    assert creds.valid
    assert read_secret(identity_emulator, creds) == b"s3cret-v1"
    assert admin.calls()[-1]["principal"] == TARGET


def test_a_chain_broken_in_the_middle_is_denied_naming_the_permission(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, admin: Admin
) -> None:
    source = federated(identity_emulator, idp, tmp_path)
    source.refresh(LoopbackRequest())
    # hop-b accepts tokens from hop-a only: the federated identity cannot skip hop-a.
    creds = impersonate(identity_emulator, source, TARGET, [DELEGATE_B])
    with pytest.raises(auth_exceptions.RefreshError) as raised:
        creds.refresh(LoopbackRequest())
    text = str(raised.value)
    assert "iam.serviceAccounts.getAccessToken" in text
    assert source.token not in text
    logged = admin.calls()[-1]
    assert logged["result"] == "PERMISSION_DENIED"
    assert logged["message"] == f"{DENIED} [emulator: {FEDERATED} may not get tokens for {DELEGATE_B}]"


def test_denied_impersonation_answers_as_iam_does(identity_emulator: EmulatorEndpoints, admin: Admin) -> None:
    token = admin.token(DIRECT)
    response = generate(identity_emulator, LONELY, token)
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": 403,
            "message": DENIED,
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": "iam.serviceAccounts.getAccessToken"},
                }
            ],
        }
    }
    assert token not in response.text


def test_google_auth_reports_denied_impersonation_with_the_permission(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path
) -> None:
    creds = federated(identity_emulator, idp, tmp_path, impersonate=LONELY)
    with pytest.raises(auth_exceptions.RefreshError, match=r"iam\.serviceAccounts\.getAccessToken"):
        creds.refresh(LoopbackRequest())


def test_an_unknown_account_is_not_found(identity_emulator: EmulatorEndpoints, admin: Admin) -> None:
    nobody = "nobody@demo-project.iam.gserviceaccount.com"
    response = generate(identity_emulator, nobody, admin.token(DIRECT))
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"Not found; Gaia id not found for email {nobody}"
    delegated = generate(
        identity_emulator,
        TARGET,
        admin.token(DIRECT),
        {"delegates": [f"projects/-/serviceAccounts/{nobody}"]},
    )
    assert delegated.status_code == 404


def test_the_callers_token_must_be_valid(identity_emulator: EmulatorEndpoints, admin: Admin) -> None:
    missing = generate(identity_emulator, READER, None)
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith(
        "Request is missing required authentication credential."
    )
    assert missing.json()["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="https://accounts.google.com/"'
    unknown = generate(identity_emulator, READER, "ya29.made-up")
    assert unknown.status_code == 401
    assert unknown.json()["error"]["status"] == "UNAUTHENTICATED"
    assert unknown.json()["error"]["message"].startswith("Request had invalid authentication credentials.")
    token = admin.token(DIRECT, lifetime_seconds=60)
    admin.advance(61)
    expired = generate(identity_emulator, READER, token)
    assert expired.status_code == 401
    assert expired.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    assert token not in expired.text


def test_an_admin_token_can_be_the_source_of_impersonated_credentials(
    identity_emulator: EmulatorEndpoints, admin: Admin, idp: Idp
) -> None:
    config = identity_config(idp)
    config["service_accounts"][READER] = {"token_creators": [f"serviceAccount:{DIRECT}"]}
    admin.post("/identity", config).raise_for_status()
    source = oauth2_credentials.Credentials(admin.token(DIRECT))
    creds = impersonate(identity_emulator, source, READER, lifetime=600)
    creds.refresh(LoopbackRequest())
    assert creds.expiry is not None
    remaining = creds.expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert dt.timedelta(seconds=590) < remaining <= dt.timedelta(seconds=600)
    assert read_secret(identity_emulator, creds) == b"s3cret-v1"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"lifetime": "0s"}, 400, "Lifetime of access token must be larger then zero."),
        (
            {"lifetime": "3601s"},
            400,
            "can not have lifetimes of more than 1 hour. Use the Org Policy Constraint "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension to allow up to 12 hours.",
        ),
        ({"lifetime": "an hour"}, 400, "Invalid value at 'lifetime'"),
        ({"scope": "x"}, 400, "Invalid value at 'scope'"),
        ({"delegates": ["not an account"]}, 400, "Invalid form of account ID not an account."),
        (
            {"lifetme": "60s"},
            400,
            'Invalid JSON payload received. Unknown name "lifetme": Cannot find field.',
        ),
        ([], 400, "Invalid JSON payload received."),
    ],
)
def test_bad_requests_are_refused(
    identity_emulator: EmulatorEndpoints, admin: Admin, body: Any, status: int, message: str
) -> None:
    response = generate(identity_emulator, READER, admin.token(READER), body)
    assert response.status_code == status
    assert response.json()["error"]["message"].startswith(message)


def test_the_token_answer_has_the_shape_google_auth_parses(
    identity_emulator: EmulatorEndpoints, admin: Admin, idp: Idp
) -> None:
    config = identity_config(idp)
    config["service_accounts"][READER] = {"token_creators": [DIRECT]}
    admin.post("/identity", config).raise_for_status()
    response = generate(identity_emulator, READER, admin.token(DIRECT), {"lifetime": "600s", "scope": None})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"accessToken", "expireTime"}
    expire = dt.datetime.strptime(body["expireTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert dt.timedelta(seconds=590) < expire - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=600)


def test_longer_lifetimes_need_the_extension(start_emulator: StartEmulator, idp: Idp) -> None:
    config = identity_config(idp, max_token_lifetime_seconds=43200)
    config["service_accounts"][READER] = {"token_creators": [DIRECT]}
    with start_emulator(config) as endpoints:
        admin = Admin(endpoints)
        assert generate(endpoints, READER, admin.token(DIRECT), {"lifetime": "7200s"}).status_code == 200
        refused = generate(endpoints, READER, admin.token(DIRECT), {"lifetime": "43201s"})
        admin.session.close()
    assert refused.json()["error"]["message"] == "can not have lifetimes of more than 12 hours."


def test_other_iam_credentials_methods_are_not_implemented(
    identity_emulator: EmulatorEndpoints, admin: Admin
) -> None:
    url = identity_emulator.impersonation_url(READER).replace(":generateAccessToken", ":signBlob")
    response = requests.post(
        url, json={}, headers={"Authorization": f"Bearer {admin.token(READER)}"}, timeout=10
    )
    assert response.status_code == 501
    wrong_method = requests.get(identity_emulator.impersonation_url(READER), timeout=10)
    assert wrong_method.status_code == 405
