"""Nothing the endpoint exposes may become a way in: token, forwarding, names, request limits, leaks.

(Connection floods: test_limits.py; the audit log: test_audit.py; the token file: test_token.py.)"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from agent.endpoint.token import TOKEN_HEADER
from testing.logs import logged_text
from tests.endpoint.conftest import (
    CANARY,
    TOKEN,
    WRONG_TOKEN,
    Endpoint,
    fetched,
    get,
    raw_request,
    running_endpoint,
)

V1_REQUESTS = [
    ("GET", "/v1/secrets/db"),
    ("GET", "/v1/secrets/unknown"),
    ("GET", "/v1/secrets"),
    ("GET", "/v1/events"),
    ("POST", "/v1/refresh"),
    ("GET", "/v1/nothing-here"),
]


# -- the token --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), V1_REQUESTS)
async def test_no_token_is_401(
    endpoint: Endpoint, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with http.request(method, endpoint.url(path)) as response:
        assert response.status == 401
        assert await response.json() == {"error": f"missing token: send it in the {TOKEN_HEADER} header"}
    assert endpoint.refreshes == []


@pytest.mark.parametrize(("method", "path"), V1_REQUESTS)
@pytest.mark.parametrize("presented", [WRONG_TOKEN, TOKEN[:-1], TOKEN + "x", "", "tökén-" + TOKEN])
async def test_wrong_token_is_403_and_never_echoed(
    endpoint: Endpoint, http: aiohttp.ClientSession, method: str, path: str, presented: str
) -> None:
    async with http.request(method, endpoint.url(path), headers={TOKEN_HEADER: presented}) as response:
        assert response.status == 403
        body = await response.text()
    assert json.loads(body) == {"error": "invalid token"}
    assert TOKEN not in body
    assert endpoint.refreshes == []


async def test_token_sent_twice_is_refused(endpoint: Endpoint) -> None:
    response = await raw_request(endpoint.port, get("/v1/secrets/db", f"{TOKEN_HEADER}: {TOKEN}"))
    assert response.status == 400
    assert CANARY not in response.body


# -- forwarding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
@pytest.mark.parametrize("path", ["/v1/secrets/db", "/v1/secrets", "/openapi.json"])
async def test_forwarded_requests_are_refused_before_auth(
    endpoint: Endpoint, http: aiohttp.ClientSession, header: str, path: str
) -> None:
    for headers in ({header: "203.0.113.7"}, {header: "203.0.113.7", TOKEN_HEADER: TOKEN}):
        async with http.get(endpoint.url(path), headers=headers) as response:
            assert response.status == 400
            body = await response.text()
        assert "forwarded requests are refused" in json.loads(body)["error"]
        assert "203.0.113.7" not in body
        assert CANARY.decode() not in body


# -- names: only exact local names, never a path ---------------------------------------------------------

PATH_TRICKS = [
    "/v1/secrets/..",
    "/v1/secrets/%2e%2e",
    "/v1/secrets/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/v1/secrets/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/v1/secrets/../../../../etc/passwd",
    "/v1/secrets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/v1/secrets//etc/passwd",
    "/v1/secrets/db%2f..%2f..%2fopenapi.json",
    "/v1/secrets/db/",
    "/v1/secrets/db/extra",
    "/v1/secrets/db%00",
    "/v1/secrets/%00",
    "/v1/secrets/DB",
    "/v1/secrets/db%20",
    "/v1/secrets/%252e%252e",
    "/v1/secrets/..%5c..%5cetc%5cpasswd",
    "/v1/secrets/~root",
    "/v1/secrets/projects%2Ftest-project%2Fsecrets%2Fdb",
    "/v1/secrets/sm:%2F%2Ftest-project%2Fdb",
    "/v1/secrets/" + "a" * 3000,
    "/v1/secrets/" + "a" * 5000,  # longer than the request line limit
]


@pytest.mark.parametrize("target", PATH_TRICKS, ids=lambda target: target[:60])
async def test_path_tricks_never_read_anything(endpoint: Endpoint, target: str) -> None:
    response = await raw_request(endpoint.port, get(target))
    assert response.status in (400, 404)
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"error"}
    assert CANARY not in response.body
    assert b"root:" not in response.body  # /etc/passwd
    assert b"openapi" not in response.body


async def test_a_secret_is_served_only_under_its_exact_local_name(endpoint: Endpoint) -> None:
    assert (await raw_request(endpoint.port, get("/v1/secrets/db"))).body == CANARY
    # The reference of the secret is not a name the endpoint knows.
    response = await raw_request(endpoint.port, get("/v1/secrets/projects%2Ftest-project%2Fsecrets%2Fdb"))
    assert response.status == 404


# -- limits ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["X-Big: " + "b" * 10_000],
        [f"X-Many-{i}: {i}" for i in range(200)],
        ["X-Bad\x01Name: 1"],
        [f"X-Token-Echo: {TOKEN}\x7f"],
    ],
    ids=["oversized header", "too many headers", "control character", "bad header value"],
)
async def test_oversized_or_malformed_headers_are_4xx_json(
    endpoint: Endpoint, logs: pytest.LogCaptureFixture, extra: list[str]
) -> None:
    response = await raw_request(endpoint.port, get("/v1/secrets/db", *extra))
    assert 400 <= response.status < 500
    assert set(response.json()) == {"error"}
    assert CANARY not in response.body
    assert TOKEN.encode() not in response.body
    assert TOKEN not in logged_text(logs)
    # The server is unharmed.
    assert (await raw_request(endpoint.port, get("/v1/secrets/db"))).body == CANARY


async def test_garbage_instead_of_http_is_400_json(endpoint: Endpoint) -> None:
    response = await raw_request(endpoint.port, b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n")
    assert response.status == 400
    assert set(response.json()) == {"error"}


# -- errors, logs, metrics: never a value, never the token ------------------------------------------------


async def test_unexpected_errors_are_a_generic_500_logging_the_type_only(
    http: aiohttp.ClientSession, logs: pytest.LogCaptureFixture
) -> None:
    def broken_refresh() -> None:
        raise RuntimeError(f"boom with {CANARY.decode()} inside")

    async with (
        running_endpoint(refresh=broken_refresh) as endpoint,
        http.post(endpoint.url("/v1/refresh"), headers=endpoint.auth()) as response,
    ):
        assert response.status == 500
        body = await response.text()
    assert json.loads(body) == {"error": "internal error"}
    assert "RuntimeError" in logged_text(logs)
    assert CANARY.decode() not in logged_text(logs)
    assert ("/v1/refresh", 500) in endpoint.metrics.calls


async def test_a_tour_of_every_route_never_leaks_the_value_or_the_token(
    http: aiohttp.ClientSession, logs: pytest.LogCaptureFixture
) -> None:
    async with running_endpoint(max_wait=0.1) as endpoint:
        bodies: list[bytes] = []
        requests: list[tuple[str, str, dict[str, str]]] = [
            ("GET", "/v1/secrets/db?format=json", endpoint.auth()),
            ("GET", "/v1/secrets/db?wait=1s", endpoint.auth(**{"If-None-Match": "*"})),
            ("GET", "/v1/secrets/db", {}),
            ("GET", "/v1/secrets/db", {TOKEN_HEADER: WRONG_TOKEN}),
            ("GET", "/v1/secrets/db", endpoint.auth(**{"X-Forwarded-For": "10.0.0.1"})),
            ("GET", "/v1/secrets/db?format=" + CANARY.decode(), endpoint.auth()),
            ("GET", "/v1/secrets/db?wait=" + CANARY.decode(), endpoint.auth()),
            ("GET", "/v1/secrets/" + CANARY.decode(), endpoint.auth()),
            ("GET", "/v1/secrets/pending", endpoint.auth()),
            ("GET", "/v1/secrets", endpoint.auth()),
            ("POST", "/v1/refresh", endpoint.auth()),
            ("DELETE", "/v1/secrets/db", endpoint.auth()),
            ("GET", "/openapi.json", {}),
        ]
        for method, path, headers in requests:
            async with http.request(method, endpoint.url(path), headers=headers) as response:
                body = await response.read()
                if response.status != 200 or "format=json" not in path:
                    bodies.append(body)
        async with http.get(endpoint.url("/v1/events"), headers=endpoint.auth()) as response:
            await response.content.readline()
            await endpoint.store.publish(
                endpoint.store.snapshot.with_updates([fetched("db", CANARY * 2, "9")])
            )
            event = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10)
            assert b"event: rotated" in event
        bodies.append(event)
    # The value appears only in the one 200 body that was asked for it (left out of `bodies`).
    for body in bodies:
        assert CANARY not in body
        assert TOKEN.encode() not in body
        assert WRONG_TOKEN.encode() not in body
    text = logged_text(logs)
    for leak in (CANARY.decode(), TOKEN, WRONG_TOKEN):
        assert leak not in text
        assert leak not in repr(endpoint.metrics.calls)
        assert leak not in endpoint.metrics.exposed_text()
    assert {route for route, _ in endpoint.metrics.calls} <= {
        "/v1/secrets/{name}",
        "/v1/secrets",
        "/v1/events",
        "/v1/refresh",
        "/openapi.json",
        "unmatched",
    }
