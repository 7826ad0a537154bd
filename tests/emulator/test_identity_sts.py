"""The STS token exchange (``POST /v1/token``), reached by google-auth itself through an
``external_account`` credential configuration's ``token_url``, and refusing what Google's STS refuses, in
its words, without ever echoing the subject token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import google.auth
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import exceptions as auth_exceptions
from google.auth import identity_pool

from agent_emulator.server import EmulatorEndpoints
from tests.emulator.conftest import (
    AUDIENCE,
    CLOUD_PLATFORM,
    FEDERATED,
    JWT_TYPE,
    PROVIDER,
    SECRET,
    SUBJECT,
    Admin,
    Idp,
    LoopbackRequest,
    StartEmulator,
    authed_grpc_client,
    credential_config,
    identity_config,
    write_json,
)

FORM = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
    "subject_token_type": JWT_TYPE,
    "audience": AUDIENCE,
    "scope": CLOUD_PLATFORM,
}


def config_file(endpoints: EmulatorEndpoints, tmp_path: Path, token: str, **config: Any) -> Path:
    """A credential config file whose subject token file holds ``token``."""
    token_file = tmp_path / "token"
    token_file.write_text(token)
    return write_json(tmp_path / "credentials.json", credential_config(endpoints, token_file, **config))


def load(
    endpoints: EmulatorEndpoints, tmp_path: Path, token: str, **config: Any
) -> identity_pool.Credentials:
    """google-auth's loader for this credential type (the one it recommends over the generic one)."""
    path = config_file(endpoints, tmp_path, token, **config)
    creds = identity_pool.Credentials.from_file(str(path), scopes=[CLOUD_PLATFORM])
    assert isinstance(creds, identity_pool.Credentials)
    return creds


def exchange(endpoints: EmulatorEndpoints, token: str, **form: str) -> requests.Response:
    return requests.post(endpoints.token_url, data={**FORM, "subject_token": token, **form}, timeout=10)


def test_google_auth_exchanges_a_kubernetes_token_and_reads_a_secret_as_the_federated_principal(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, admin: Admin
) -> None:
    creds = load(identity_emulator, tmp_path, idp.token(), impersonate=None)
    creds.refresh(LoopbackRequest())
    assert creds.token
    assert creds.token.startswith("ya29.")
    assert creds.valid
    client = authed_grpc_client(identity_emulator.grpc_target, creds)
    try:
        payload = client.access_secret_version(name=f"{SECRET}/versions/latest").payload.data
    finally:
        client.transport.close()
    assert payload == b"s3cret-v1"
    exchanged, accessed = admin.calls()[-2:]
    assert exchanged["method"] == "ExchangeToken"
    assert exchanged["principal"] == FEDERATED
    assert exchanged["resource"] == AUDIENCE
    assert accessed["method"] == "AccessSecretVersion"
    assert accessed["principal"] == FEDERATED
    assert accessed["transport"] == "grpc"


def test_application_default_credentials_and_the_generic_loader_reach_the_emulator(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_file(identity_emulator, tmp_path, idp.token())
    # What a pod does: GOOGLE_APPLICATION_CREDENTIALS names the config. No scopes at load time: with them,
    # google-auth would ask Cloud Resource Manager (on the internet) for the project.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-project")
    creds, project = google.auth.default(request=LoopbackRequest())
    assert project == "demo-project"
    scoped = creds.with_scopes([CLOUD_PLATFORM])  # type: ignore[attr-defined]
    scoped.refresh(LoopbackRequest())
    assert scoped.valid
    with pytest.warns(DeprecationWarning, match="load_credentials_from_file method is deprecated"):
        loaded, _ = google.auth.load_credentials_from_file(str(path), request=LoopbackRequest())
    loaded.with_scopes([CLOUD_PLATFORM]).refresh(LoopbackRequest())


def test_a_successful_exchange_answers_as_the_sts_does(
    identity_emulator: EmulatorEndpoints, idp: Idp
) -> None:
    response = exchange(identity_emulator, idp.token(lifetime=600))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    # Never longer than the subject token is good for.
    assert 590 <= body["expires_in"] <= 600
    assert response.headers["Cache-Control"] == "no-store"


def test_the_issued_token_lives_at_most_the_configured_lifetime(
    idp: Idp, start_emulator: StartEmulator
) -> None:
    with start_emulator(identity_config(idp, token_lifetime_seconds=120)) as endpoints:
        response = exchange(endpoints, idp.token(lifetime=7200))
    assert response.json()["expires_in"] == 120


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        (
            {"aud": "https://example.com/other"},
            "invalid_grant",
            "The audience in ID Token [https://example.com/other] does not match the expected audience.",
        ),
        ({"aud": None}, "invalid_grant", "The audience in ID Token [] does not match the expected audience."),
        (
            {"iss": "https://evil.example"},
            "invalid_grant",
            "The issuer in ID Token https://evil.example does not match the expected one in config: "
            "https://kubernetes.default.svc.cluster.local",
        ),
        ({"iat": None}, "invalid_grant", "ID Token issued at null is stale to sign-in."),
        ({"sub": None}, "invalid_grant", "The mapped attribute google.subject must not be empty."),
        (
            {"sub": "x" * 128},
            "invalid_grant",
            "The size of mapped attribute google.subject exceeds the 127 bytes",
        ),
    ],
)
def test_claims_google_refuses_are_refused_in_its_words(
    identity_emulator: EmulatorEndpoints, idp: Idp, claims: dict[str, Any], error: str, description: str
) -> None:
    token = idp.token(**claims)
    response = exchange(identity_emulator, token)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == error
    assert body["error_description"].startswith(description)
    assert token not in response.text


def test_an_expired_subject_token_is_stale_to_sign_in(identity_emulator: EmulatorEndpoints, idp: Idp) -> None:
    issued = 1_700_000_000
    response = exchange(identity_emulator, idp.token(now=issued, lifetime=600))
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": f"ID Token issued at {issued} is stale to sign-in.",
    }


def test_a_minute_of_clock_skew_is_tolerated_and_no_more(
    identity_emulator: EmulatorEndpoints, idp: Idp
) -> None:
    import time

    now = time.time()
    assert exchange(identity_emulator, idp.token(now=now - 3600 + 30, lifetime=3600 - 60)).status_code == 200
    assert exchange(identity_emulator, idp.token(now=now + 30)).status_code == 200
    assert exchange(identity_emulator, idp.token(now=now + 120)).status_code == 400
    assert exchange(identity_emulator, idp.token(nbf=int(now) + 600)).status_code == 400


def test_the_emulator_clock_expires_subject_tokens_too(
    identity_emulator: EmulatorEndpoints, idp: Idp, admin: Admin
) -> None:
    token = idp.token(lifetime=600)
    assert exchange(identity_emulator, token).status_code == 200
    admin.advance(700)
    assert "is stale to sign-in" in exchange(identity_emulator, token).json()["error_description"]


def test_a_token_signed_by_another_key_is_refused(identity_emulator: EmulatorEndpoints, rogue: Idp) -> None:
    token = rogue.token()
    response = exchange(identity_emulator, token)
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Unable to verify the ID Token signature.",
    }
    assert token not in response.text


def test_a_token_whose_key_the_provider_lacks_is_refused_as_google_does(
    identity_emulator: EmulatorEndpoints, rsa_keys: Any
) -> None:
    unknown_kid = Idp(rsa_keys[1], "key-2").token()
    es256 = Idp(ec.generate_private_key(ec.SECP256R1()), "key-1").token()
    for token in (unknown_kid, es256):
        assert exchange(identity_emulator, token).json() == {
            "error": "invalid_grant",
            "error_description": "Error connecting to the given credential's issuer.",
        }


def test_a_tampered_token_fails_its_signature(identity_emulator: EmulatorEndpoints, idp: Idp) -> None:
    header, claims, signature = idp.token().split(".")
    other_claims = idp.token(sub="system:serviceaccount:prod:admin").split(".")[1]
    response = exchange(identity_emulator, f"{header}.{other_claims}.{signature}")
    assert response.json()["error_description"] == "Unable to verify the ID Token signature."
    for garbage in ("not-a-jwt", "a.b.c", f"{header}.{claims}"):
        assert exchange(identity_emulator, garbage).json() == {
            "error": "invalid_grant",
            "error_description": "Unable to parse the ID Token.",
        }


def test_es256_and_pem_keys_are_trusted_too(start_emulator: StartEmulator, idp: Idp) -> None:
    ec_idp = Idp(ec.generate_private_key(ec.SECP256R1()), "ec-1")
    config = identity_config(idp)
    config["providers"] = {
        PROVIDER: {"issuer": idp.issuer, "public_key_pem": idp.public_pem + ec_idp.public_pem}
    }
    with start_emulator(config) as endpoints:
        assert exchange(endpoints, idp.token()).status_code == 200
        assert exchange(endpoints, ec_idp.token()).status_code == 200


def test_allowed_audiences_and_subjects_replace_the_defaults(start_emulator: StartEmulator, idp: Idp) -> None:
    config = identity_config(idp)
    config["providers"][PROVIDER].update(
        {"allowed_audiences": ["sts.example"], "allowed_subjects": ["system:serviceaccount:prod:*"]}
    )
    with start_emulator(config) as endpoints:
        assert exchange(endpoints, idp.token(aud=["other", "sts.example"])).status_code == 200
        assert (
            exchange(endpoints, idp.token())
            .json()["error_description"]
            .startswith("The audience in ID Token [")
        )
        assert exchange(
            endpoints, idp.token(aud="sts.example", sub="system:serviceaccount:dev:app")
        ).json() == {
            "error": "unauthorized_client",
            "error_description": "The given credential is rejected by the attribute condition.",
        }


def test_the_provider_resource_name_is_accepted_as_an_audience_by_default(
    identity_emulator: EmulatorEndpoints, idp: Idp
) -> None:
    assert exchange(identity_emulator, idp.token(aud=AUDIENCE)).status_code == 200


@pytest.mark.parametrize(
    ("form", "error", "start"),
    [
        (
            {"audience": "projects/1/locations/global/workloadIdentityPools/p/providers/x"},
            "invalid_request",
            'Invalid value for "audience". This value should be the full resource name',
        ),
        (
            {"audience": AUDIENCE.replace("kind-cluster", "elsewhere")},
            "invalid_target",
            'The target service indicated by the "audience" parameters is invalid.',
        ),
        (
            {"audience": "//iam.googleapis.com/locations/global/workforcePools/wf/providers/x"},
            "invalid_target",
            "The target service",
        ),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", 'Invalid value for "grant_type".'),
        ({"requested_token_type": "urn:x"}, "invalid_request", 'Invalid value for "requested_token_type".'),
        (
            {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
            "invalid_request",
            'Invalid value for "subject_token_type".',
        ),
        ({"subject_token": ""}, "invalid_request", 'Invalid value for "subject_token".'),
    ],
)
def test_bad_parameters_are_refused(
    identity_emulator: EmulatorEndpoints, idp: Idp, form: dict[str, str], error: str, start: str
) -> None:
    response = requests.post(
        identity_emulator.token_url, data={**FORM, "subject_token": idp.token(), **form}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"].startswith(start)


def test_json_bodies_work_and_other_content_or_methods_do_not(
    identity_emulator: EmulatorEndpoints, idp: Idp
) -> None:
    url = identity_emulator.token_url
    assert requests.post(url, json={**FORM, "subject_token": idp.token()}, timeout=10).status_code == 200
    text = requests.post(url, data="x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert text.status_code == 415  # the guard: no text/plain posts from web pages
    assert requests.get(url, timeout=10).status_code == 405
    multipart = requests.post(url, files={"x": b"y"}, timeout=10)
    assert multipart.status_code == 415


def test_forms_are_accepted_on_the_token_endpoint_only(identity_emulator: EmulatorEndpoints) -> None:
    secret_url = f"{identity_emulator.rest_url}/v1/projects/p/secrets?secretId=s"
    response = requests.post(secret_url, data={"a": "b"}, timeout=10)
    assert response.status_code == 415


def test_a_web_page_cannot_post_a_form_to_it(identity_emulator: EmulatorEndpoints, idp: Idp) -> None:
    response = requests.post(
        identity_emulator.token_url,
        data={**FORM, "subject_token": idp.token()},
        headers={"Origin": "https://evil.example"},
        timeout=10,
    )
    assert response.status_code == 403


def test_sizes_are_bounded(identity_emulator: EmulatorEndpoints, idp: Idp) -> None:
    huge = idp.token(padding="x" * 20_000)
    response = exchange(identity_emulator, huge)
    assert response.status_code == 400
    assert response.json()["error_description"] == "The ID Token is larger than 16384 bytes."
    assert huge not in response.text
    body = "subject_token=" + "x" * 70_000
    too_large = requests.post(
        identity_emulator.token_url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert too_large.status_code == 413
    many = "&".join(f"k{i}=v" for i in range(100))
    crowded = requests.post(
        identity_emulator.token_url,
        data=many,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert crowded.status_code == 400


def test_google_auth_reports_a_wrong_audience_without_the_token(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path
) -> None:
    token = idp.token(aud="https://example.com/not-the-pool")
    creds = load(identity_emulator, tmp_path, token)
    with pytest.raises(auth_exceptions.OAuthError) as raised:
        creds.refresh(LoopbackRequest())
    text = str(raised.value)
    assert "invalid_grant" in text
    assert "does not match the expected audience" in text
    assert token not in text


def test_a_rotated_token_file_is_read_at_the_next_refresh(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, admin: Admin
) -> None:
    creds = load(identity_emulator, tmp_path, idp.token(lifetime=600), impersonate=None)
    creds.refresh(LoopbackRequest())
    admin.advance(900)  # the first subject token is now stale on the emulator's clock
    with pytest.raises(auth_exceptions.OAuthError, match="is stale to sign-in"):
        creds.refresh(LoopbackRequest())
    # The kubelet rotates the projected token: the next refresh reads the new one.
    import time

    (tmp_path / "token").write_text(idp.token(now=time.time() + 900, lifetime=3600))
    creds.refresh(LoopbackRequest())
    assert creds.valid
    assert admin.calls()[-1]["principal"] == FEDERATED
    assert SUBJECT in FEDERATED
