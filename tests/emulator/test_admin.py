"""The admin API under /emulator/v1: every route, validation errors as JSON 400s, and the clock firing a
due rotation seen through the official client."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1
from google.protobuf import duration_pb2, timestamp_pb2

from agent_emulator.admin import rfc3339

JSON = {"Content-Type": "application/json"}
"""What a state-changing admin request must declare (a browser cannot send it cross-site unasked)."""


def url(emulator: Any, path: str) -> str:
    return f"{emulator.admin_url}/{path}"


def parse_rfc3339(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text[:-1] + "+00:00")


def test_rfc3339_is_utc_with_z() -> None:
    moment = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert rfc3339(moment) == "2024-05-01T12:00:00.123456Z"
    assert rfc3339(moment.astimezone(dt.timezone(dt.timedelta(hours=2)))) == "2024-05-01T12:00:00.123456Z"


def test_healthz(emulator: Any) -> None:
    response = requests.get(url(emulator, "healthz"), timeout=10)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_faults_get_put_clear(emulator: Any) -> None:
    assert requests.get(url(emulator, "faults"), timeout=10).json() == {
        "seed": None,
        "faults": {},
        "quotas": False,
    }
    document = {
        "seed": 42,
        "faults": {"AccessSecretVersion": {"unavailable": 0.2, "latency_ms": 50}, "*": {"fail_next": 2}},
        "quotas": {"read_per_minute": 5},
    }
    put = requests.put(url(emulator, "faults"), json=document, timeout=10)
    assert put.status_code == 200, put.text
    expected = {
        "seed": 42,
        "faults": {"AccessSecretVersion": {"unavailable": 0.2, "latency_ms": 50.0}, "*": {"fail_next": 2}},
        "quotas": {"access_per_minute": 90000, "read_per_minute": 5, "write_per_minute": 600},
    }
    assert put.json() == expected
    assert requests.get(url(emulator, "faults"), timeout=10).json() == expected

    cleared = requests.post(url(emulator, "faults:clear"), headers=JSON, timeout=10)
    assert cleared.status_code == 200
    assert cleared.json() == {"seed": 42, "faults": {}, "quotas": expected["quotas"]}
    assert requests.get(url(emulator, "faults"), timeout=10).json() == cleared.json()


def test_get_faults_shows_the_fail_next_countdown(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    body = {"faults": {"ListSecrets": {"fail_next": 2, "fail_code": "INTERNAL"}}}
    assert requests.put(url(emulator, "faults"), json=body, timeout=10).status_code == 200
    with pytest.raises(gexc.InternalServerError, match="Internal error encountered"):
        client.list_secrets(parent="projects/p")
    faults = requests.get(url(emulator, "faults"), timeout=10).json()["faults"]
    assert faults == {"ListSecrets": {"fail_next": 1, "fail_code": "INTERNAL"}}


def test_put_faults_lists_every_problem_in_a_400(emulator: Any) -> None:
    document = {
        "faults": {"GetSecret": {"unavailable": 1.5, "latency_ms": -1}, "Nope": {}},
        "quotas": {"reads": 1},
    }
    response = requests.put(url(emulator, "faults"), json=document, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400
    assert error["message"] == "invalid fault config"
    assert {p["path"] for p in error["problems"]} == {
        "faults.GetSecret.unavailable",
        "faults.GetSecret.latency_ms",
        "faults.Nope",
        "quotas.reads",
    }
    # A rejected config changes nothing.
    assert requests.get(url(emulator, "faults"), timeout=10).json()["faults"] == {}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "must be a JSON document"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a mapping"),
    ],
)
def test_put_faults_rejects_bodies_that_are_not_a_config(emulator: Any, body: str, fragment: str) -> None:
    response = requests.put(url(emulator, "faults"), data=body, headers=JSON, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"] + "".join(p["message"] for p in error["problems"])


def test_counters_get_and_reset(emulator: Any, client: secretmanager_v1.SecretManagerServiceClient) -> None:
    assert requests.get(url(emulator, "counters"), timeout=10).json() == {"methods": {}, "total": 0}
    client.create_secret(parent="projects/p", secret_id="s", secret={"replication": {"automatic": {}}})
    with pytest.raises(gexc.NotFound):
        client.get_secret(name="projects/p/secrets/missing")
    assert requests.get(url(emulator, "counters"), timeout=10).json() == {
        "methods": {"CreateSecret": {"OK": 1}, "GetSecret": {"NOT_FOUND": 1}},
        "total": 2,
    }
    reset = requests.post(url(emulator, "counters:reset"), headers=JSON, timeout=10)
    assert (reset.status_code, reset.json()) == (200, {"methods": {}, "total": 0})


def test_clock_get_and_advance(emulator: Any) -> None:
    before = requests.get(url(emulator, "clock"), timeout=10).json()
    assert before["offset_seconds"] == 0
    start = parse_rfc3339(before["now"])
    response = requests.post(url(emulator, "clock:advance"), json={"seconds": 86400}, timeout=10)
    assert response.status_code == 200, response.text
    advanced = response.json()
    assert advanced["rotations_fired"] == 0
    assert advanced["offset_seconds"] == 86400
    assert parse_rfc3339(advanced["now"]) - start >= dt.timedelta(days=1)
    assert requests.get(url(emulator, "clock"), timeout=10).json()["offset_seconds"] == 86400


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({"seconds": -1}, "seconds", "only moves forward"),
        ({"seconds": "60"}, "seconds", "expected a number"),
        ({"seconds": True}, "seconds", "expected a number"),
        ({"seconds": 1e300}, "seconds", "too large"),
        ({"secs": 60}, "", '{"seconds": <number>}'),
        ([60], "", '{"seconds": <number>}'),
    ],
)
def test_clock_advance_validates_its_body(emulator: Any, body: Any, path: str, fragment: str) -> None:
    response = requests.post(url(emulator, "clock:advance"), json=body, timeout=10)
    assert response.status_code == 400
    problems = response.json()["error"]["problems"]
    assert [p["path"] for p in problems] == [path]
    assert fragment in problems[0]["message"]
    assert requests.get(url(emulator, "clock"), timeout=10).json()["offset_seconds"] == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "nothing-here", 404, "no admin route GET /emulator/v1/nothing-here; the routes are: GET"),
        ("POST", "faults:reset", 404, "no admin route POST /emulator/v1/faults:reset"),
        ("DELETE", "faults", 405, "DELETE is not allowed on /emulator/v1/faults; use GET or PUT"),
        ("GET", "clock:advance", 405, "use POST"),
    ],
)
def test_unknown_admin_routes_answer_json_not_500(
    emulator: Any, method: str, path: str, status: int, fragment: str
) -> None:
    response = requests.request(method, url(emulator, path), headers=JSON, timeout=10)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_advancing_the_clock_fires_a_due_rotation(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    now = parse_rfc3339(requests.get(url(emulator, "clock"), timeout=10).json()["now"])
    next_rotation = timestamp_pb2.Timestamp()
    next_rotation.FromDatetime(now + dt.timedelta(hours=1))
    secret = client.create_secret(
        parent="projects/p",
        secret_id="rotating",
        secret={
            "replication": {"automatic": {}},
            # The service requires a topic on a secret with rotation; with no Pub/Sub configured the
            # emulator drops the SECRET_ROTATE event, which is fine here.
            "topics": [{"name": "projects/p/topics/rotations"}],
            "rotation": {
                "next_rotation_time": next_rotation,
                "rotation_period": duration_pb2.Duration(seconds=3600),
            },
        },
    )
    not_yet = requests.post(url(emulator, "clock:advance"), json={"seconds": 1800}, timeout=10).json()
    assert not_yet["rotations_fired"] == 0

    response = requests.post(url(emulator, "clock:advance"), json={"seconds": 5400}, timeout=10)
    assert response.status_code == 200, response.text
    advanced = response.json()
    assert advanced["rotations_fired"] == 1
    new_now = parse_rfc3339(advanced["now"])
    moved = client.get_secret(name=secret.name).rotation.next_rotation_time
    assert moved > new_now
    assert moved - new_now <= dt.timedelta(hours=1)

    again = requests.post(url(emulator, "clock:advance"), json={"seconds": 0}, timeout=10).json()
    assert again["rotations_fired"] == 0


def test_advancing_the_clock_expires_a_secret_with_a_ttl(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    # Without the admin route running the lifecycle at once, the expiry would wait for the server's timer.
    secret = client.create_secret(
        parent="projects/p",
        secret_id="short-lived",
        secret={"replication": {"automatic": {}}, "ttl": duration_pb2.Duration(seconds=3600)},
    )
    assert client.get_secret(name=secret.name).name == secret.name
    response = requests.post(url(emulator, "clock:advance"), json={"seconds": 7200}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["lifecycle_changes"] == 1
    with pytest.raises(gexc.NotFound):
        client.get_secret(name=secret.name)
