"""Per-project per-minute quotas: the fixed-window decision (table), the tracker on an injected monotonic
clock, and the official client hitting scaled-down limits on a running emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1

from agent_emulator.options import EmulatorOptions
from agent_emulator.quotas import (
    SERVICE_LIMITS,
    WINDOW_SECONDS,
    QuotaLimits,
    QuotaTracker,
    Window,
    admit,
    quota_exceeded_message,
)


@pytest.mark.parametrize(
    ("window", "now", "limit", "expected"),
    [
        (None, 100.0, 5, (True, Window(100.0, 1))),
        (Window(100.0, 4), 159.9, 5, (True, Window(100.0, 5))),
        (Window(100.0, 5), 159.9, 5, (False, Window(100.0, 5))),
        (Window(100.0, 5), 160.0, 5, (True, Window(160.0, 1))),
        (Window(100.0, 5), 500.0, 5, (True, Window(500.0, 1))),
        (None, 100.0, 0, (False, Window(100.0, 0))),
        (Window(100.0, 3), 50.0, 5, (True, Window(50.0, 1))),
    ],
)
def test_fixed_window_admits_up_to_the_limit(
    window: Window | None, now: float, limit: int, expected: tuple[bool, Window]
) -> None:
    assert admit(window, now, limit) == expected


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tracker_keeps_projects_and_kinds_apart_and_refills_after_a_minute() -> None:
    clock = FakeMonotonic()
    tracker = QuotaTracker(QuotaLimits(access_per_minute=2, read_per_minute=5, write_per_minute=1), clock)
    assert [tracker.admit("a", "read") for _ in range(6)] == [True] * 5 + [False]
    assert tracker.admit("b", "read")
    assert [tracker.admit("a", "access") for _ in range(3)] == [True, True, False]
    assert [tracker.admit("a", "write") for _ in range(2)] == [True, False]
    clock.now += WINDOW_SECONDS - 0.001
    assert not tracker.admit("a", "read")
    clock.now += 0.001
    assert tracker.admit("a", "read")


def test_service_limits_are_the_published_ones() -> None:
    assert SERVICE_LIMITS.to_json() == {
        "access_per_minute": 90_000,
        "read_per_minute": 600,
        "write_per_minute": 600,
    }


@pytest.mark.parametrize(
    ("kind", "metric"),
    [("access", "Access requests"), ("read", "Read requests"), ("write", "Write requests")],
)
def test_quota_message_names_metric_limit_service_and_consumer(kind: Any, metric: str) -> None:
    assert quota_exceeded_message(kind, "my-project") == (
        f"Quota exceeded for quota metric '{metric}' and limit '{metric} per minute per project' "
        "of service 'secretmanager.googleapis.com' for consumer 'project_number:my-project'."
    )


# ---- against a running emulator ---------------------------------------------------------------------------


def _put_quotas(admin_url: str, quotas: object) -> None:
    response = requests.put(f"{admin_url}/faults", json={"quotas": quotas}, timeout=10)
    assert response.status_code == 200, response.text


def _create(client: secretmanager_v1.SecretManagerServiceClient, project: str, secret_id: str) -> str:
    secret = client.create_secret(
        parent=f"projects/{project}", secret_id=secret_id, secret={"replication": {"automatic": {}}}
    )
    client.add_secret_version(parent=secret.name, payload={"data": b"value"})
    return str(secret.name)


def test_the_sixth_read_in_a_minute_is_refused_with_the_service_message(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    name = _create(client, "quota-a", "s")
    other = _create(client, "quota-b", "s")
    _put_quotas(emulator.admin_url, {"read_per_minute": 5, "access_per_minute": 3})
    for _ in range(5):
        assert client.get_secret(name=name).name == name
    with pytest.raises(gexc.ResourceExhausted) as caught:
        client.get_secret(name=name)
    assert caught.value.message == (
        "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per project' "
        "of service 'secretmanager.googleapis.com' for consumer 'project_number:quota-a'."
    )
    # Every read method shares the read quota.
    with pytest.raises(gexc.ResourceExhausted):
        client.list_secrets(parent="projects/quota-a")
    # Another project has its own quota.
    assert client.get_secret(name=other).name == other
    # Access is a separate quota: still available to the project whose reads are used up. No retry here:
    # the client's default policy would retry RESOURCE_EXHAUSTED for 60 s.
    for _ in range(3):
        assert client.access_secret_version(name=f"{name}/versions/1", retry=None).payload.data == b"value"
    with pytest.raises(gexc.ResourceExhausted) as caught:
        client.access_secret_version(name=f"{name}/versions/1", retry=None)
    assert "quota metric 'Access requests'" in caught.value.message

    counters = requests.get(f"{emulator.admin_url}/counters", timeout=10).json()["methods"]
    assert counters["GetSecret"] == {"OK": 6, "RESOURCE_EXHAUSTED": 1}
    assert counters["ListSecrets"] == {"RESOURCE_EXHAUSTED": 1}
    assert counters["AccessSecretVersion"] == {"OK": 3, "RESOURCE_EXHAUSTED": 1}


def test_write_quota_counts_every_mutating_method(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    _put_quotas(emulator.admin_url, {"write_per_minute": 3})
    name = _create(client, "quota-w", "s")  # two writes: create + add version
    client.disable_secret_version(name=f"{name}/versions/1")  # the third
    with pytest.raises(gexc.ResourceExhausted) as caught:
        client.enable_secret_version(name=f"{name}/versions/1")
    assert "quota metric 'Write requests'" in caught.value.message
    # Reads are unaffected.
    assert client.get_secret_version(name=f"{name}/versions/1").state.name == "DISABLED"


def test_quotas_are_off_by_default(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    faults = requests.get(f"{emulator.admin_url}/faults", timeout=10).json()
    assert faults["quotas"] is False
    name = _create(client, "quota-off", "s")
    for _ in range(20):
        client.get_secret(name=name)


def test_quotas_flag_and_file_at_start(tmp_path: Path) -> None:
    from agent_emulator.server import running_emulator
    from tests.conftest import grpc_client

    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0, quotas=True)) as endpoints:
        faults = requests.get(f"{endpoints.admin_url}/faults", timeout=10).json()
        assert faults["quotas"] == SERVICE_LIMITS.to_json()

    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({"quotas": {"write_per_minute": 1}}))
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0, faults=path)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        try:
            client.create_secret(
                parent="projects/q", secret_id="one", secret={"replication": {"automatic": {}}}
            )
            with pytest.raises(gexc.ResourceExhausted):
                client.create_secret(
                    parent="projects/q", secret_id="two", secret={"replication": {"automatic": {}}}
                )
        finally:
            client.transport.close()
