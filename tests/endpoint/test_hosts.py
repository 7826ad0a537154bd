"""Which requests the endpoint answers at all, before the token: a loopback ``Host`` (DNS rebinding) and no
proxy header. Raw requests on real sockets, so that every header is exactly what a browser or proxy sends."""

from __future__ import annotations

import pytest

from agent.endpoint.token import TOKEN_HEADER
from tests.endpoint.conftest import CANARY, TOKEN, Endpoint, raw_request, running_endpoint


def request(target: str, *headers: str, host: str | None = "127.0.0.1") -> bytes:
    """A raw GET with the token and ``Connection: close``; ``host`` None sends no Host header at all."""
    lines = [f"GET {target} HTTP/1.1", f"{TOKEN_HEADER}: {TOKEN}", "Connection: close", *headers]
    if host is not None:
        lines.insert(1, f"Host: {host}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


LOOPBACK = ["127.0.0.1", "127.0.0.1:8730", "localhost", "LocalHost:8730", "localhost.", "[::1]", "[::1]:8730"]
FOREIGN = [
    "rebind.attacker.example",  # the DNS-rebinding page's own name
    "rebind.attacker.example:8730",
    "localhost.attacker.example",
    "127.0.0.1.nip.io",
    "10.0.0.7:8730",  # an IP literal, but not loopback: the endpoint is reached over loopback only
    "[fd00::1]:8730",
    "127.0.0.1:8730:1",  # malformed
    "[::1",
    "",
]


@pytest.mark.parametrize("host", LOOPBACK)
@pytest.mark.parametrize("target", ["/v1/secrets/db", "/openapi.json"])
async def test_loopback_hosts_are_answered(endpoint: Endpoint, host: str, target: str) -> None:
    response = await raw_request(endpoint.port, request(target, host=host))
    assert response.status == 200
    if target == "/v1/secrets/db":
        assert response.body == CANARY


@pytest.mark.parametrize("host", FOREIGN)
@pytest.mark.parametrize("target", ["/v1/secrets/db", "/v1/secrets", "/openapi.json", "/metrics"])
async def test_any_other_host_is_refused_before_the_token_and_never_echoed(
    endpoint: Endpoint, host: str, target: str
) -> None:
    response = await raw_request(endpoint.port, request(target, host=host))
    assert response.status == 421
    assert "loopback" in response.json()["error"]
    assert CANARY not in response.body
    if "example" in host or "nip.io" in host:
        assert host.split(":")[0].encode() not in response.body
    assert endpoint.refreshes == []


async def test_a_request_without_host_is_refused(endpoint: Endpoint) -> None:
    # HTTP/1.1 requires Host (aiohttp itself answers 400); HTTP/1.0 does not, and the endpoint says 421.
    response = await raw_request(endpoint.port, request("/v1/secrets/db", host=None))
    assert response.status == 400
    assert CANARY not in response.body
    old = request("/v1/secrets/db", host=None).replace(b"HTTP/1.1", b"HTTP/1.0")
    response = await raw_request(endpoint.port, old)
    assert response.status == 421
    assert CANARY not in response.body


async def test_configured_names_are_answered_too() -> None:
    async with running_endpoint(allowed_hosts=["Agent.Local", "10.0.0.7"]) as endpoint:
        for host in ("agent.local", "agent.local:8730", "10.0.0.7:8730"):
            response = await raw_request(endpoint.port, request("/v1/secrets/db", host=host))
            assert (response.status, response.body) == (200, CANARY), host
        refused = await raw_request(endpoint.port, request("/v1/secrets/db", host="other.local"))
        assert refused.status == 421


# -- proxy headers ------------------------------------------------------------------------------------------

RELAYED = [
    ("X-Forwarded-For", "X-Forwarded-*"),
    ("X-Forwarded-Host", "X-Forwarded-*"),
    ("X-Forwarded-Proto", "X-Forwarded-*"),
    ("x-forwarded-port", "X-Forwarded-*"),
    ("Forwarded", "Forwarded"),
    ("X-Real-IP", "X-Real-IP"),
    ("Via", "Via"),
    ("X-Envoy-External-Address", "X-Envoy-*"),
    ("X-Envoy-Original-Path", "X-Envoy-*"),
    ("X-Client-IP", "X-Client-IP"),
    ("True-Client-IP", "True-Client-IP"),
    ("CF-Connecting-IP", "CF-Connecting-IP"),
    ("fastly-client-ip", "Fastly-Client-IP"),
    ("X-Cluster-Client-IP", "X-Cluster-Client-IP"),
    ("X-Original-Forwarded-For", "X-Original-Forwarded-For"),
]


@pytest.mark.parametrize(("header", "named"), RELAYED)
@pytest.mark.parametrize("target", ["/v1/secrets/db", "/openapi.json"])
async def test_every_proxy_header_is_refused(
    endpoint: Endpoint, header: str, named: str, target: str
) -> None:
    response = await raw_request(endpoint.port, request(target, f"{header}: 203.0.113.7"))
    assert response.status == 400
    assert response.json()["error"] == (
        f"forwarded requests are refused ({named} header present): "
        "call the endpoint directly from inside the pod"
    )
    assert b"203.0.113.7" not in response.body
    assert CANARY not in response.body


async def test_a_proxy_header_name_the_client_made_up_is_not_echoed(endpoint: Endpoint) -> None:
    response = await raw_request(endpoint.port, request("/v1/secrets/db", f"X-Forwarded-{TOKEN}: 1"))
    assert response.status == 400
    assert TOKEN.encode() not in response.body
