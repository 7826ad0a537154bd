"""The Google Cloud CLI — another official client, over REST — cannot tell our emulator from the service."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from google.cloud import secretmanager_v1

from agent_emulator.server import EmulatorEndpoints


def gcloud(
    emulator: EmulatorEndpoints, config_dir: Path, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("gcloud")
    if exe is None:
        pytest.fail("gcloud not found: install the Google Cloud SDK (CI machines carry it)")
    env = {
        **os.environ,
        # A throwaway configuration directory: never read or change the developer's gcloud settings.
        "CLOUDSDK_CONFIG": str(config_dir),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_SECRETMANAGER": emulator.rest_url + "/",
        "CLOUDSDK_AUTH_ACCESS_TOKEN": "emulator-does-not-check-tokens",
        "CLOUDSDK_CORE_PROJECT": "gcloud-project",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    return subprocess.run([exe, *args], input=stdin, env=env, capture_output=True, timeout=60, check=False)


def test_gcloud_creates_adds_and_accesses_versions(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    created = gcloud(emulator, tmp_path, "secrets", "create", "from-gcloud", "--data-file=-", stdin=b"first")
    assert created.returncode == 0, created.stderr.decode()
    added = gcloud(
        emulator, tmp_path, "secrets", "versions", "add", "from-gcloud", "--data-file=-", stdin=b"second"
    )
    assert added.returncode == 0, added.stderr.decode()
    assert b"Created version [2]" in added.stderr

    # What gcloud wrote over REST, the gRPC client reads back, checksum and all.
    response = client.access_secret_version(
        name="projects/gcloud-project/secrets/from-gcloud/versions/latest"
    )
    assert response.payload.data == b"second"
    assert response.name.endswith("/versions/2")

    accessed = gcloud(emulator, tmp_path, "secrets", "versions", "access", "1", "--secret", "from-gcloud")
    assert accessed.returncode == 0, accessed.stderr.decode()
    assert accessed.stdout == b"first"


def test_gcloud_sees_the_services_error_for_a_disabled_latest(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    secret = client.create_secret(
        parent="projects/gcloud-project", secret_id="half-rotated", secret={"replication": {"automatic": {}}}
    )
    client.add_secret_version(parent=secret.name, payload={"data": b"v1"})
    newest = client.add_secret_version(parent=secret.name, payload={"data": b"v2"})
    client.disable_secret_version(name=newest.name)

    result = gcloud(emulator, tmp_path, "secrets", "versions", "access", "latest", "--secret", "half-rotated")
    assert result.returncode != 0
    assert (
        "FAILED_PRECONDITION: Secret Version [projects/gcloud-project/secrets/half-rotated/versions/2] "
        "is in DISABLED state." in result.stderr.decode()
    )


def test_gcloud_disables_destroys_and_deletes_through_the_browser_guard(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    # Every state-changing call gcloud makes passes the cross-site guard (JSON, or a body-less DELETE).
    created = gcloud(emulator, tmp_path, "secrets", "create", "short-lived", "--data-file=-", stdin=b"v1")
    assert created.returncode == 0, created.stderr.decode()
    for verb in ("disable", "enable", "destroy"):
        done = gcloud(emulator, tmp_path, "secrets", "versions", verb, "1", "--secret", "short-lived")
        assert done.returncode == 0, done.stderr.decode()
    labelled = gcloud(emulator, tmp_path, "secrets", "update", "short-lived", "--update-labels=env=dev")
    assert labelled.returncode == 0, labelled.stderr.decode()
    deleted = gcloud(emulator, tmp_path, "secrets", "delete", "short-lived")
    assert deleted.returncode == 0, deleted.stderr.decode()
    assert list(client.list_secrets(parent="projects/gcloud-project")) == []
