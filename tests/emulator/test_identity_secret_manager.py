"""Tokens on every Secret Manager call (``require_auth``), permissions per secret, the quota project
(``x-goog-user-project``), and the admin API around them (tokens, identity, calls, per-project counters):
through the official client over gRPC and REST, authenticated by google-auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from google.api_core import exceptions as gexc
from google.auth import identity_pool
from google.oauth2 import credentials as oauth2_credentials

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.conftest import grpc_client
from tests.emulator.conftest import (
    ADMIN,
    CLOUD_PLATFORM,
    DIRECT,
    FEDERATED,
    OTHER_SECRET,
    PROJECT,
    READER,
    SECRET,
    SEED,
    TARGET,
    Admin,
    Idp,
    authed_grpc_client,
    authed_rest_client,
    credential_config,
    identity_config,
    write_json,
)

LATEST = f"{SECRET}/versions/latest"
UNKNOWN_PROVIDER = "projects/1/locations/global/workloadIdentityPools/pool/providers/nope"
MISSING = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INVALID = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def token_creds(token: str, quota_project: str | None = None) -> oauth2_credentials.Credentials:
    """Plain bearer-token credentials (what a metadata server or ``gcloud auth print-access-token`` gives)."""
    return oauth2_credentials.Credentials(token, quota_project_id=quota_project)


class Clients:
    """Official clients for one set of credentials, closed at the end of the test."""

    def __init__(self, endpoints: EmulatorEndpoints) -> None:
        self.endpoints = endpoints
        self._open: list[Any] = []

    def grpc(self, creds: Any) -> Any:
        client = authed_grpc_client(self.endpoints.grpc_target, creds)
        self._open.append(client)
        return client

    def rest(self, creds: Any) -> Any:
        client = authed_rest_client(self.endpoints.rest_url, creds)
        self._open.append(client)
        return client

    def close(self) -> None:
        for client in self._open:
            client.transport.close()


@pytest.fixture
def clients(identity_emulator: EmulatorEndpoints) -> Iterator[Clients]:
    found = Clients(identity_emulator)
    yield found
    found.close()


def test_a_call_without_a_token_is_unauthenticated(identity_emulator: EmulatorEndpoints) -> None:
    client = grpc_client(identity_emulator.grpc_target)
    try:
        with pytest.raises(gexc.Unauthenticated) as raised:
            client.access_secret_version(name=LATEST)
    finally:
        client.transport.close()
    assert raised.value.message == MISSING
    assert raised.value.reason == "CREDENTIALS_MISSING"
    assert raised.value.domain == "googleapis.com"
    # Over REST the official client, on a 401, asks its credentials to refresh (anonymous ones cannot):
    # the answer itself is what Google sends.
    response = requests.get(f"{identity_emulator.rest_url}/v1/{LATEST}:access", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": 401,
        "message": MISSING,
        "status": "UNAUTHENTICATED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CREDENTIALS_MISSING",
                "domain": "googleapis.com",
                "metadata": {
                    "service": "secretmanager.googleapis.com",
                    "method": "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion",
                },
            }
        ],
    }


def test_an_unknown_token_is_unauthenticated(identity_emulator: EmulatorEndpoints, clients: Clients) -> None:
    with pytest.raises(gexc.Unauthenticated) as raised:
        clients.grpc(token_creds("ya29.not-one-of-ours")).get_secret(name=SECRET)
    assert raised.value.message == INVALID
    assert raised.value.reason == "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    raw = requests.get(
        f"{identity_emulator.rest_url}/v1/{SECRET}",
        headers={"Authorization": "Basic dXNlcjpwdw=="},
        timeout=10,
    )
    assert raw.status_code == 401
    assert raw.headers["WWW-Authenticate"] == 'Bearer realm="https://accounts.google.com/"'


def test_an_expired_access_token_is_unauthenticated_on_the_emulator_clock(
    clients: Clients, admin: Admin
) -> None:
    token = admin.token(READER, lifetime_seconds=300)
    client = clients.grpc(token_creds(token))
    assert client.access_secret_version(name=LATEST).payload.data == b"s3cret-v1"
    admin.advance(301)
    with pytest.raises(gexc.Unauthenticated) as raised:
        client.access_secret_version(name=LATEST)
    assert raised.value.reason == "ACCESS_TOKEN_EXPIRED"
    assert token not in str(raised.value)


def test_a_revoked_token_stops_working(clients: Clients, admin: Admin) -> None:
    token = admin.token(READER)
    client = clients.grpc(token_creds(token))
    client.get_secret(name=SECRET)
    assert admin.post("/tokens:revoke", {"access_token": token}).json() == {"revoked": 1}
    with pytest.raises(gexc.Unauthenticated):
        client.get_secret(name=SECRET)
    other = admin.token(READER)
    assert admin.post("/tokens:revoke", {"principal": READER}).json() == {"revoked": 1}
    with pytest.raises(gexc.Unauthenticated):
        clients.grpc(token_creds(other)).get_secret(name=SECRET)


def test_a_principal_without_access_is_denied_as_secret_manager_words_it(
    clients: Clients, admin: Admin
) -> None:
    client = clients.grpc(token_creds(admin.token(READER)))
    other = f"{OTHER_SECRET}/versions/latest"
    with pytest.raises(gexc.PermissionDenied) as raised:
        client.access_secret_version(name=other)
    assert raised.value.message == (
        f"Permission 'secretmanager.versions.access' denied for resource '{other}' (or it may not exist)."
    )
    assert raised.value.reason == "IAM_PERMISSION_DENIED"
    # A secret that does not exist is denied the same way: no access, no knowing.
    with pytest.raises(gexc.PermissionDenied):
        client.access_secret_version(name=f"projects/{PROJECT}/secrets/nope/versions/latest")
    # With access to every secret of the project, a missing one is NOT_FOUND.
    with pytest.raises(gexc.NotFound):
        clients.grpc(token_creds(admin.token(TARGET))).access_secret_version(
            name=f"projects/{PROJECT}/secrets/nope/versions/latest"
        )


def test_roles_grant_what_they_say(clients: Clients, admin: Admin) -> None:
    accessor = clients.grpc(token_creds(admin.token(READER)))
    assert accessor.get_secret(name=SECRET).name == SECRET
    assert accessor.get_secret_version(name=f"{SECRET}/versions/1").name == f"{SECRET}/versions/1"
    with pytest.raises(gexc.PermissionDenied, match=r"secretmanager\.secrets\.list"):
        list(accessor.list_secrets(parent=f"projects/{PROJECT}"))
    with pytest.raises(gexc.PermissionDenied, match=r"secretmanager\.versions\.add"):
        accessor.add_secret_version(parent=SECRET, payload={"data": b"mine"})
    owner = clients.grpc(token_creds(admin.token(ADMIN)))
    owner.add_secret_version(parent=SECRET, payload={"data": b"v2"})
    names = {s.name for s in owner.list_secrets(parent=f"projects/{PROJECT}")}
    assert names == {SECRET, OTHER_SECRET}
    owner.create_secret(parent="projects/elsewhere", secret_id="x", secret={"replication": {"automatic": {}}})


def test_the_viewer_role_lists_but_cannot_read_values(
    identity_emulator: EmulatorEndpoints, clients: Clients, admin: Admin, idp: Idp
) -> None:
    config = identity_config(idp)
    config["access"] = [
        {
            "principal": DIRECT,
            "secrets": f"projects/{PROJECT}/secrets/*",
            "role": "roles/secretmanager.viewer",
        }
    ]
    admin.post("/identity", config).raise_for_status()
    viewer = clients.grpc(token_creds(admin.token(DIRECT)))
    assert len(list(viewer.list_secrets(parent=f"projects/{PROJECT}"))) == 2
    assert len(list(viewer.list_secret_versions(parent=SECRET))) == 1
    with pytest.raises(gexc.PermissionDenied, match=r"secretmanager\.versions\.access"):
        viewer.access_secret_version(name=LATEST)


def test_federated_credentials_work_over_rest_and_denials_carry_google_json(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, clients: Clients
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(idp.token())
    path = write_json(tmp_path / "c.json", credential_config(identity_emulator, token_file, impersonate=None))
    creds = identity_pool.Credentials.from_file(str(path), scopes=[CLOUD_PLATFORM])
    client = clients.rest(creds)
    assert client.access_secret_version(name=LATEST).payload.data == b"s3cret-v1"
    with pytest.raises(gexc.Forbidden) as raised:
        client.access_secret_version(name=f"{OTHER_SECRET}/versions/1")
    assert raised.value.reason == "IAM_PERMISSION_DENIED"
    assert "secretmanager.versions.access" in raised.value.message
    assert creds.token not in str(raised.value)


# ---- quota project --------------------------------------------------------------------------------------


def test_an_allowed_quota_project_is_billed_and_recorded(clients: Clients, admin: Admin) -> None:
    client = clients.grpc(token_creds(admin.token(READER), quota_project="billing-ok"))
    assert client.access_secret_version(name=LATEST).payload.data == b"s3cret-v1"
    rest = clients.rest(token_creds(admin.token(READER), quota_project="billing-ok"))
    rest.get_secret(name=SECRET)
    clients.grpc(token_creds(admin.token(READER))).get_secret(name=SECRET)
    by_project = admin.counters_by_project()
    assert by_project["billing-ok"] == {"AccessSecretVersion": {"OK": 1}, "GetSecret": {"OK": 1}}
    assert by_project[PROJECT] == {"GetSecret": {"OK": 1}}
    calls = admin.calls(limit=3)
    assert [(c["method"], c["quota_project"], c["transport"]) for c in calls] == [
        ("AccessSecretVersion", "billing-ok", "grpc"),
        ("GetSecret", "billing-ok", "rest"),
        ("GetSecret", None, "grpc"),
    ]


def test_a_quota_project_the_principal_may_not_use_is_refused(clients: Clients, admin: Admin) -> None:
    client = clients.grpc(token_creds(admin.token(TARGET), quota_project="billing-ok"))
    with pytest.raises(gexc.PermissionDenied) as raised:
        client.access_secret_version(name=LATEST)
    assert raised.value.message.startswith(
        "Caller does not have required permission to use project billing-ok. Grant the caller the "
        "roles/serviceusage.serviceUsageConsumer role"
    )
    assert raised.value.reason == "USER_PROJECT_DENIED"
    rest = clients.rest(token_creds(admin.token(READER), quota_project="somebody-else"))
    with pytest.raises(gexc.Forbidden, match="use project somebody-else"):
        rest.get_secret(name=SECRET)
    assert admin.calls()[-1]["result"] == "PERMISSION_DENIED"
    assert admin.calls()[-1]["quota_project"] == "somebody-else"


def test_the_quota_project_travels_through_impersonation(
    identity_emulator: EmulatorEndpoints, idp: Idp, tmp_path: Path, clients: Clients, admin: Admin
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(idp.token())
    path = write_json(
        tmp_path / "c.json", credential_config(identity_emulator, token_file, impersonate=READER)
    )
    creds = identity_pool.Credentials.from_file(str(path), scopes=[CLOUD_PLATFORM]).with_quota_project(
        "billing-ok"
    )
    assert clients.grpc(creds).access_secret_version(name=LATEST).payload.data == b"s3cret-v1"
    generated, accessed = admin.calls()[-2:]
    # google-auth bills the generateAccessToken call too, with the federated token: the pool must be
    # allowed to use the quota project as well as the service account.
    assert (generated["method"], generated["principal"], generated["quota_project"]) == (
        "GenerateAccessToken",
        FEDERATED,
        "billing-ok",
    )
    assert (accessed["principal"], accessed["quota_project"]) == (READER, "billing-ok")


def test_quotas_count_against_the_quota_project(tmp_path: Path, idp: Idp) -> None:
    identity = tmp_path / "identity.yaml"
    identity.write_text(yaml.safe_dump(identity_config(idp)))
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(SEED))
    faults = tmp_path / "faults.yaml"
    faults.write_text(yaml.safe_dump({"quotas": {"access_per_minute": 2}}))
    options = EmulatorOptions(grpc_port=0, http_port=0, identity=identity, seed=seed, faults=faults)
    with running_emulator(options) as endpoints:
        admin = Admin(endpoints)
        billed = authed_grpc_client(endpoints.grpc_target, token_creds(admin.token(READER), "billing-ok"))
        own = authed_grpc_client(endpoints.grpc_target, token_creds(admin.token(READER)))
        try:
            billed.access_secret_version(name=LATEST)
            billed.access_secret_version(name=LATEST)
            with pytest.raises(gexc.ResourceExhausted, match="project_number:billing-ok"):
                billed.access_secret_version(name=LATEST, retry=None)
            # The resource's own project has a quota of its own.
            own.access_secret_version(name=LATEST)
        finally:
            billed.transport.close()
            own.transport.close()
            admin.session.close()


# ---- without require_auth ----------------------------------------------------------------------------


def test_without_require_auth_nothing_is_checked_but_everything_is_recorded(tmp_path: Path, idp: Idp) -> None:
    identity = tmp_path / "identity.yaml"
    identity.write_text(yaml.safe_dump(identity_config(idp, require_auth=False)))
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(SEED))
    with running_emulator(
        EmulatorOptions(grpc_port=0, http_port=0, identity=identity, seed=seed)
    ) as endpoints:
        admin = Admin(endpoints)
        anonymous = grpc_client(endpoints.grpc_target)
        known = authed_grpc_client(endpoints.grpc_target, token_creds(admin.token(READER), "anything-goes"))
        made_up = authed_grpc_client(endpoints.grpc_target, token_creds("any"))
        try:
            assert (
                anonymous.access_secret_version(name=f"{OTHER_SECRET}/versions/1").payload.data == b"theirs"
            )
            known.access_secret_version(name=f"{OTHER_SECRET}/versions/1")
            made_up.get_secret(name=SECRET)
            calls = admin.calls(limit=3)
        finally:
            for client in (anonymous, known, made_up):
                client.transport.close()
            admin.session.close()
    assert [(c["principal"], c["quota_project"], c["result"]) for c in calls] == [
        (None, None, "OK"),
        (READER, "anything-goes", "OK"),
        (None, None, "OK"),
    ]


def test_an_emulator_without_identity_still_answers_tokens_with_not_found(
    emulator: EmulatorEndpoints,
) -> None:
    admin = Admin(emulator)
    try:
        response = requests.post(
            emulator.impersonation_url(READER),
            json={"scope": [CLOUD_PLATFORM]},
            headers={"Authorization": f"Bearer {admin.token(DIRECT)}"},
            timeout=10,
        )
    finally:
        admin.session.close()
    assert response.status_code == 404


# ---- admin API ------------------------------------------------------------------------------------------


def test_identity_can_be_switched_on_at_run_time(emulator: EmulatorEndpoints, idp: Idp) -> None:
    admin = Admin(emulator)
    client = grpc_client(emulator.grpc_target)
    try:
        client.create_secret(
            parent=f"projects/{PROJECT}", secret_id="s", secret={"replication": {"automatic": {}}}
        )
        replaced = admin.post("/identity", identity_config(idp))
        assert replaced.status_code == 200, replaced.text
        shown = requests.get(f"{emulator.admin_url}/identity", timeout=10).json()
        assert shown["require_auth"] is True
        assert READER in shown["service_accounts"]
        with pytest.raises(gexc.Unauthenticated):
            client.get_secret(name=f"projects/{PROJECT}/secrets/s")
        assert admin.post("/identity", {"require_auth": False}).status_code == 200
        client.get_secret(name=f"projects/{PROJECT}/secrets/s")
    finally:
        client.transport.close()
        admin.session.close()


def test_a_bad_identity_config_is_refused_with_every_problem(admin: Admin) -> None:
    response = admin.post(
        "/identity",
        {"require_auth": "yes", "providers": {"nope": {"issuer": "http://x"}}, "acess": []},
    )
    assert response.status_code == 400
    paths = [p["path"] for p in response.json()["error"]["problems"]]
    assert paths == ["acess", "require_auth", "providers.nope", "providers.nope.issuer", "providers.nope"]
    # The old config stays in force.
    assert requests.get(f"{admin.endpoints.admin_url}/identity", timeout=10).json()["require_auth"] is True


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"principal": "not a principal"}, "principal"),
        ({}, "principal"),
        ({"principal": READER, "lifetime_seconds": 0}, "lifetime_seconds"),
        ({"principal": READER, "lifetime_seconds": True}, "lifetime_seconds"),
        ({"principal": READER, "scopes": "x"}, "scopes"),
        ({"principal": READER, "extra": 1}, "extra"),
    ],
)
def test_minting_checks_its_input(admin: Admin, body: dict[str, Any], path: str) -> None:
    response = admin.post("/tokens", body)
    assert response.status_code == 400
    assert path in [p["path"] for p in response.json()["error"]["problems"]]


def test_minted_tokens_say_what_they_are(admin: Admin) -> None:
    minted = admin.post(
        "/tokens", {"principal": f"serviceAccount:{READER.upper()}", "lifetime_seconds": 60}
    ).json()
    assert minted["principal"] == READER
    assert minted["token_type"] == "Bearer"
    assert minted["expires_in"] == 60
    assert minted["access_token"].startswith("ya29.")
    federated = admin.post("/tokens", {"principal": FEDERATED}).json()
    assert federated["principal"] == FEDERATED


def test_the_call_log_is_bounded_clearable_and_never_holds_a_token(
    clients: Clients, admin: Admin, idp: Idp
) -> None:
    token = admin.token(READER)
    client = clients.grpc(token_creds(token))
    for _ in range(3):
        client.get_secret(name=SECRET)
    subject_token = idp.token()
    requests.post(
        admin.endpoints.token_url,
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "audience": f"//iam.googleapis.com/{UNKNOWN_PROVIDER}",
            "subject_token": subject_token,
        },
        timeout=10,
    )
    assert len(admin.calls(limit=2)) == 2
    text = requests.get(f"{admin.endpoints.admin_url}/calls", params={"limit": 1000}, timeout=10).text
    assert token not in text
    assert subject_token not in text
    assert admin.calls()[-1]["result"] == "invalid_target"
    bad_limit = requests.get(f"{admin.endpoints.admin_url}/calls", params={"limit": "lots"}, timeout=10)
    assert bad_limit.status_code == 400
    assert admin.post("/calls:clear", {}).json()["calls"] == []
    assert admin.calls() == []


def test_grpc_status_details_survive_the_wire(identity_emulator: EmulatorEndpoints) -> None:
    channel = grpc.insecure_channel(identity_emulator.grpc_target)
    try:
        method = channel.unary_unary(
            "/google.cloud.secretmanager.v1.SecretManagerService/GetSecret",
            request_serializer=lambda x: x,
            response_deserializer=lambda x: x,
        )
        with pytest.raises(grpc.RpcError) as raised:
            method(b"")
        trailers = dict(raised.value.trailing_metadata())
    finally:
        channel.close()
    assert "grpc-status-details-bin" in trailers


def test_a_token_without_the_cloud_platform_scope_is_refused(clients: Clients, admin: Admin) -> None:
    minted = admin.post(
        "/tokens", {"principal": READER, "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}
    ).json()
    with pytest.raises(gexc.PermissionDenied) as raised:
        clients.grpc(token_creds(minted["access_token"])).get_secret(name=SECRET)
    assert raised.value.message == "Request had insufficient authentication scopes."
    assert raised.value.reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"


def test_long_fields_are_cut_in_the_call_log(clients: Clients, admin: Admin) -> None:
    client = clients.grpc(token_creds(admin.token(ADMIN)))
    with pytest.raises(gexc.GoogleAPICallError):
        client.get_secret(name=f"projects/{PROJECT}/secrets/" + "x" * 2000)
    logged = admin.calls()[-1]
    assert len(logged["resource"]) <= 515
    assert logged["resource"].endswith("...")
