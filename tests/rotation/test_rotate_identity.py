"""Who the rotator is: the rotation config's ``gcp`` section (the agent's identity settings, read by the
agent's loader) applied by ``secrets-agent rotate`` and ``rotation status`` as real processes, against an
emulator that requires a token on every Secret Manager call. The pod's Workload Identity Federation
credential configuration is exchanged at the emulator's STS, the rotator's account impersonated through its
IAM Credentials, the calls billed to the quota project; google-auth unpatched inside the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.config import GcpConfig
from agent.rotation.backend import make_backend
from agent.rotation.config import RotationConfig
from agent.secrets.manager import SecretManager
from agent.sources.identity import TOKEN_CREATOR_PERMISSION, IdentitySettings
from tests.emulator.conftest import FEDERATED, Idp
from tests.secrets.identity_world import BILLING, LONELY, PROJECT, ROTATOR, World, identity_world

TIMEOUT = 60


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp(rsa.generate_private_key(public_exponent=65537, key_size=2048), "cluster-key-1")


@pytest.fixture
def world(idp: Idp, tmp_path: Path) -> Iterator[World]:
    with identity_world(tmp_path, idp) as found:
        yield found


def rotation_config(path: Path, world: World, **gcp: Any) -> Path:
    """A rotation config whose ``gcp`` section is the pod's credential configuration plus ``gcp``."""
    section: dict[str, Any] = {"credentials_file": str(world.credentials), **gcp}
    if "impersonate_service_account" in gcp:
        section.setdefault("iam_endpoint", world.endpoints.rest_url)
    path.write_text(yaml.safe_dump({"project": PROJECT, "gcp": section}, sort_keys=False))
    return path


def run(*args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """``secrets-agent ARGS`` with none of the caller's agent, emulator or Google variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECRETS_AGENT_", "SECRET_MANAGER_", "GOOGLE_", "PUBSUB_"))
    }
    command = [sys.executable, "-m", "agent", *args]
    if endpoint is not None:
        command += ["--endpoint", endpoint]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def test_rotate_as_the_impersonated_rotator_billed_to_the_quota_project(world: World, tmp_path: Path) -> None:
    config = rotation_config(
        tmp_path / "rotation.yaml", world, impersonate_service_account=ROTATOR, quota_project=BILLING
    )

    done = run(
        "rotate", "session-key", "-c", str(config), "--output", "json", endpoint=world.endpoints.grpc_target
    )

    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["results"]
    assert (result["secret"], result["result"], result["old_version"], result["new_version"]) == (
        "session-key",
        "rotated",
        "1",
        "2",
    )
    calls = world.secret_manager_calls()
    assert "AddSecretVersion" in {c["method"] for c in calls}
    assert {(c["principal"], c["quota_project"], c["result"]) for c in calls} == {(ROTATOR, BILLING, "OK")}
    # The pod's own token was exchanged, and the rotator impersonated with it: once for the whole run.
    assert {c["principal"] for c in world.calls("sts.googleapis.com")} == {FEDERATED}
    [minted] = world.calls("iamcredentials.googleapis.com")
    assert (minted["resource"], minted["principal"], minted["result"]) == (
        f"projects/-/serviceAccounts/{ROTATOR}",
        FEDERATED,
        "OK",
    )
    assert not world.leaks(done.stdout + done.stderr)

    # rotation status is the same rotator.
    mark = len(world.secret_manager_calls())
    status = run(
        "rotation", "status", "-c", str(config), "--output", "json", endpoint=world.endpoints.grpc_target
    )
    assert status.returncode == 0, status.stderr
    assert [(s["secret"], s["current_version"]) for s in json.loads(status.stdout)["secrets"]] == [
        ("session-key", "2")
    ]
    after = world.secret_manager_calls()[mark:]
    assert after
    assert {(c["principal"], c["quota_project"]) for c in after} == {(ROTATOR, BILLING)}


def test_denied_impersonation_is_one_clear_failure_naming_the_account_and_the_permission(
    world: World, tmp_path: Path
) -> None:
    config = rotation_config(tmp_path / "rotation.yaml", world, impersonate_service_account=LONELY)

    done = run("rotate", "session-key", "-c", str(config), endpoint=world.endpoints.grpc_target)

    assert done.returncode == 1, done.stderr
    [header, row] = done.stdout.splitlines()
    assert header.split() == ["SECRET", "TYPE", "VERSION", "RESULT", "MESSAGE"]
    assert " failed " in row
    assert (
        f"PERMISSION_DENIED: cannot impersonate {LONELY}: permission {TOKEN_CREATOR_PERMISSION} denied" in row
    )
    assert f"(hint: grant roles/iam.serviceAccountTokenCreator on {LONELY} to " in row
    assert not world.leaks(done.stdout + done.stderr)
    assert not world.secret_manager_calls()  # nothing reached Secret Manager, nothing changed


def test_an_invalid_gcp_setting_exits_2_naming_its_path(tmp_path: Path) -> None:
    config = tmp_path / "rotation.yaml"
    config.write_text(
        "project: demo-project\n"
        "gcp:\n"
        "  impersonate_service_account: rotator\n"
        "  quota_project: Billing\n"
        "  endpoint: 127.0.0.1:8780\n"
    )

    done = run("rotate", "all", "-c", str(config), "--project", PROJECT)

    assert done.returncode == 2
    assert done.stdout == ""
    assert sorted(done.stderr.splitlines()) == [
        f"secrets-agent: {config}: gcp.endpoint: unknown key (did you mean 'iam_endpoint'?)",
        f"secrets-agent: {config}: gcp.impersonate_service_account: expected a service account email such as "
        "reader@my-project.iam.gserviceaccount.com, got 'rotator'",
        f"secrets-agent: {config}: gcp.quota_project: project id 'Billing' is invalid: expected 6-30 "
        "lowercase letters, digits or '-', starting with a letter and not ending with '-' "
        "(or a project number)",
    ]


def test_the_identitys_tokens_never_go_in_plaintext_off_loopback(tmp_path: Path) -> None:
    config = tmp_path / "rotation.yaml"
    config.write_text(f"project: demo-project\ngcp:\n  impersonate_service_account: {ROTATOR}\n")

    done = run("rotation", "status", "-c", str(config), endpoint="10.0.0.7:8780")

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "secrets-agent: --endpoint: 10.0.0.7 is not a loopback address, and rotate would send it the access "
        "tokens of the rotation config's gcp identity in plaintext: use an emulator on a loopback address, "
        "or leave the identity out of the rotation config"
    ]


def test_the_backend_is_the_rotation_configs_identity() -> None:
    gcp = GcpConfig(
        credentials_file=Path("/var/run/gcp/credentials.json"),
        impersonate_service_account=ROTATOR,
        iam_endpoint="http://127.0.0.1:8781/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        quota_project=BILLING,
    )
    backend = make_backend(
        dotenv=None,
        project=PROJECT,
        endpoint="127.0.0.1:8780",
        config=RotationConfig(project=PROJECT, gcp=gcp),
    )

    assert isinstance(backend, SecretManager)
    assert backend.identity == IdentitySettings.from_config(
        GcpConfig(
            endpoint="127.0.0.1:8780",
            credentials_file=gcp.credentials_file,
            impersonate_service_account=ROTATOR,
            iam_endpoint=gcp.iam_endpoint,
            quota_project=BILLING,
        )
    )
    assert backend.identity.endpoint_credentials
    # No gcp section: Application Default Credentials, and the emulator gets none.
    plain = make_backend(dotenv=None, project=PROJECT, endpoint="127.0.0.1:8780", config=None)
    assert isinstance(plain, SecretManager)
    assert plain.identity.base == IdentitySettings().base
    assert not plain.identity.endpoint_credentials
