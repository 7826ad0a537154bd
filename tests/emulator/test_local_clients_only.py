"""Only local programs reach the emulator's HTTP port: a web page's cross-site form or text/plain post, a
request from a foreign Origin and a DNS-rebound Host are refused (agent_emulator.guard), while the official
clients still pass. Raw HTTP (http.client) for what those clients would never send."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from google.cloud import secretmanager_v1

from agent_emulator.guard import HostPolicy
from agent_emulator.server import EmulatorEndpoints
from tests.conftest import rest_client

SECRET = "projects/p/secrets/s"
ADD = f"/v1/{SECRET}:addVersion"
BODY = json.dumps({"payload": {"data": "cHduZWQ="}}).encode()


@pytest.fixture
def rest(emulator: EmulatorEndpoints) -> Iterator[secretmanager_v1.SecretManagerServiceClient]:
    client = rest_client(emulator.rest_url)
    client.create_secret(parent="projects/p", secret_id="s", secret={"replication": {"automatic": {}}})
    yield client
    client.transport.close()


def send(
    emulator: EmulatorEndpoints, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    """One raw request (http.client sends exactly these headers, plus Host unless given)."""
    address = urlsplit(emulator.rest_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        skip_host = "Host" in headers
        connection.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def versions(client: secretmanager_v1.SecretManagerServiceClient) -> list[str]:
    return [v.name for v in client.list_secret_versions(parent=SECRET)]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_a_browser_simple_post_adds_no_version(
    emulator: EmulatorEndpoints, rest: secretmanager_v1.SecretManagerServiceClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}

    status, answer = send(emulator, "POST", ADD, BODY, headers)

    assert status == 415
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "Content-Type: application/json" in str(error["message"])
    assert versions(rest) == []


@pytest.mark.parametrize(
    "path", ["/emulator/v1/faults:clear", "/emulator/v1/counters:reset", "/emulator/v1/clock:advance"]
)
def test_a_browser_simple_post_changes_no_admin_state(emulator: EmulatorEndpoints, path: str) -> None:
    status, answer = send(emulator, "POST", path, b'{"seconds": 86400}', {"Content-Type": "text/plain"})

    assert status == 415
    assert "Content-Type: application/json" in str(answer["error"])
    _, clock = send(emulator, "GET", "/emulator/v1/clock", None, {})
    assert clock["offset_seconds"] == 0


def test_json_from_a_foreign_origin_is_refused(
    emulator: EmulatorEndpoints, rest: secretmanager_v1.SecretManagerServiceClient
) -> None:
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example:8781"):
        status, answer = send(
            emulator, "POST", ADD, BODY, {"Content-Type": "application/json", "Origin": origin}
        )
        assert status == 403, origin
        assert answer["error"]["status"] == "PERMISSION_DENIED"  # type: ignore[index]
    assert versions(rest) == []


def test_a_cross_site_read_is_refused(emulator: EmulatorEndpoints) -> None:
    status, answer = send(emulator, "GET", "/v1/projects/p/secrets", None, {"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert "Cross-site" in str(answer["error"])


def test_a_loopback_page_and_a_typed_url_are_served(
    emulator: EmulatorEndpoints, rest: secretmanager_v1.SecretManagerServiceClient
) -> None:
    headers = {"Content-Type": "application/json", "Origin": "http://localhost:3000"}
    assert send(emulator, "POST", ADD, BODY, headers)[0] == 200
    assert send(emulator, "GET", "/v1/projects/p/secrets", None, {"Sec-Fetch-Site": "none"})[0] == 200
    assert len(versions(rest)) == 1


@pytest.mark.parametrize("path", ["/v1/projects/p/secrets", "/emulator/v1/healthz"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8781", "127.0.0.1.nip.io", "localhost.evil"])
def test_a_rebound_host_name_is_refused(emulator: EmulatorEndpoints, path: str, host: str) -> None:
    status, answer = send(emulator, "GET", path, None, {"Host": host})
    assert status == 403
    assert "DNS rebinding" in str(answer["error"])


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:1", "localhost:8781", "LOCALHOST", "[::1]:8781"])
def test_loopback_hosts_are_served(emulator: EmulatorEndpoints, host: str) -> None:
    assert send(emulator, "GET", "/emulator/v1/healthz", None, {"Host": host}) == (200, {"status": "ok"})


def test_the_configured_host_and_wildcard_addresses() -> None:
    named = HostPolicy("emulator.internal")
    assert named.allows("emulator.internal")
    assert named.allows("127.0.0.1")
    assert not named.allows("10.0.0.7")
    wildcard = HostPolicy("0.0.0.0")
    assert wildcard.allows("10.0.0.7")
    assert wildcard.allows("fd00::1")
    assert not wildcard.allows("evil.example")


def test_curl_style_json_and_a_bodyless_delete_still_work(
    emulator: EmulatorEndpoints, rest: secretmanager_v1.SecretManagerServiceClient
) -> None:
    assert send(emulator, "POST", ADD, BODY, {"Content-Type": "application/json"})[0] == 200
    assert send(emulator, "DELETE", f"/v1/{SECRET}", None, {})[0] == 200
    assert [s.name for s in rest.list_secrets(parent="projects/p")] == []


def test_the_official_rest_client_changes_state(rest: secretmanager_v1.SecretManagerServiceClient) -> None:
    version = rest.add_secret_version(parent=SECRET, payload={"data": b"v1"})
    rest.disable_secret_version(name=version.name)
    rest.enable_secret_version(name=version.name)
    rest.destroy_secret_version(name=version.name)
    rest.update_secret(secret={"name": SECRET, "labels": {"a": "b"}}, update_mask={"paths": ["labels"]})
    rest.delete_secret(name=SECRET)
    assert [s.name for s in rest.list_secrets(parent="projects/p")] == []
