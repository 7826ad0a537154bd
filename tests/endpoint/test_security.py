"""Nothing the endpoint exposes may become a way in: token, forwarding, names, limits, floods, leaks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from agent.config import ServerConfig
from agent.core.model import crc32c
from agent.endpoint.token import TOKEN_FILE_MODE, TOKEN_HEADER, resolve_token, token_matches
from agent.errors import AgentError
from tests.endpoint.conftest import (
    CANARY,
    TOKEN,
    Endpoint,
    fetched,
    get,
    logged_text,
    raw_request,
    running_endpoint,
)

WRONG_TOKEN = "wrong-token-marker-0c9a41ee"

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


def test_token_comparison_is_exact() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches("\udcff" + TOKEN, TOKEN)  # any header text, never an exception


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


async def open_idle(
    port: int, count: int, partial: bool
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    connections = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if partial and i % 2:
            # Half a request, never finished: a slowloris.
            writer.write(b"GET /v1/secrets/db HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        connections.append((reader, writer))
    return connections


async def closed_by_server(
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], want: int, within: float = 10.0
) -> int:
    """How many of ``connections`` the server closed (EOF or reset), waiting ``within`` s for ``want``."""

    async def sees_close(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()

    pending = {asyncio.create_task(sees_close(reader)) for reader, _ in connections}
    closed = 0
    deadline = asyncio.get_running_loop().time() + within
    while pending and closed < want:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        closed += len(done)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return closed


def close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


async def test_a_thousand_idle_connections_do_not_starve_a_real_client(http: aiohttp.ClientSession) -> None:
    limit = 50
    # An idle timeout far longer than the test: only the connection cap can close the flood's sockets.
    async with running_endpoint(max_connections=limit, idle_timeout=600) as endpoint:
        flood = await open_idle(endpoint.port, 1000, partial=True)
        try:
            async with asyncio.timeout(20):
                async with http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response:
                    assert response.status == 200
                    assert await response.read() == CANARY
            # The cap is real: the server let go of all but `limit` of the flood's sockets.
            assert await closed_by_server(flood, 1000 - limit) >= 1000 - limit
        finally:
            close_all(flood)


async def test_idle_and_half_sent_connections_are_closed_after_the_idle_timeout() -> None:
    async with running_endpoint(idle_timeout=0.3) as endpoint:
        idle = await open_idle(endpoint.port, 4, partial=True)
        try:
            assert await closed_by_server(idle, 4) == 4
        finally:
            close_all(idle)


async def test_when_every_connection_is_busy_a_newcomer_gets_503(http: aiohttp.ClientSession) -> None:
    async with running_endpoint(max_connections=2) as endpoint:
        etag = f'"3-{crc32c(CANARY):08x}"'
        headers = endpoint.auth(**{"If-None-Match": etag})

        async def long_poll() -> int:
            # A session each: two connections, as two apps would hold.
            async with (
                aiohttp.ClientSession() as own,
                own.get(endpoint.url("/v1/secrets/db?wait=60s"), headers=headers) as response,
            ):
                return response.status

        polls = [asyncio.create_task(long_poll()) for _ in range(2)]
        await endpoint.store.waiters_reach(2)
        refused = await raw_request(endpoint.port, get("/v1/secrets/db"))
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "too many connections: retry shortly"}
        for _ in range(5):  # an ordinary client, whose request is already sent when the answer comes
            async with (
                aiohttp.ClientSession() as other,
                other.get(endpoint.url("/v1/secrets/db")) as response,
            ):
                assert response.status == 503
                assert await response.json() == {"error": "too many connections: retry shortly"}
        await endpoint.store.publish(endpoint.store.snapshot.with_updates([fetched("db", b"new", "4")]))
        assert await asyncio.wait_for(asyncio.gather(*polls), 30) == [200, 200]
        # Slots free again: served.
        assert (await raw_request(endpoint.port, get("/v1/secrets/db"))).body == b"new"


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


# -- the audit log ----------------------------------------------------------------------------------------


def audit_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [dict(record.fields) for record in caplog.records if record.name == "agent.audit"]  # type: ignore[attr-defined]


async def test_every_secret_read_is_audited_without_the_value(
    endpoint: Endpoint, http: aiohttp.ClientSession, logs: pytest.LogCaptureFixture
) -> None:
    etag = f'"3-{crc32c(CANARY):08x}"'
    reads = [
        ("/v1/secrets/db", endpoint.auth()),
        ("/v1/secrets/db", endpoint.auth(**{"If-None-Match": etag})),
        ("/v1/secrets/nope", endpoint.auth()),
        ("/v1/secrets/db", {}),
        ("/v1/secrets/db", {TOKEN_HEADER: WRONG_TOKEN}),
        ("/v1/secrets/pending", endpoint.auth()),
        ("/v1/secrets/db", endpoint.auth(**{"X-Forwarded-For": "10.0.0.1"})),
        ("/v1/secrets", endpoint.auth()),  # a listing is not a read
    ]
    for path, headers in reads:
        async with http.get(endpoint.url(path), headers=headers) as response:
            await response.read()
    records = audit_records(logs)
    assert [(r["secret"], r["result"], r["version"]) for r in records] == [
        ("db", "ok", "3"),
        ("db", "not_modified", "3"),
        (None, "unknown", None),  # a client-chosen name is never logged: it could be anything
        ("db", "unauthorized", None),
        ("db", "forbidden", None),
        ("pending", "not_fetched", None),
        ("db", "forwarded", None),
    ]
    assert {r["client"] for r in records} == {"127.0.0.1"}
    assert CANARY.decode() not in logged_text(logs)


async def test_repeated_reads_are_counted_into_one_line(
    http: aiohttp.ClientSession, logs: pytest.LogCaptureFixture
) -> None:
    async with running_endpoint() as endpoint:
        for _ in range(5):
            async with http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response:
                assert response.status == 200
        # The first read is logged at once; the repeats wait for the end of the window.
        assert [(r["secret"], r["reads"]) for r in audit_records(logs)] == [("db", 1)]
        async with http.get(endpoint.url("/v1/secrets/tls"), headers=endpoint.auth()) as response:
            assert response.status == 200  # a different secret: logged at once
    # Stopping the endpoint ends the window: the 4 repeats become one line.
    records = audit_records(logs)
    assert [(r["secret"], r["result"], r["version"], r["reads"]) for r in records] == [
        ("db", "ok", "3", 1),
        ("tls", "ok", "7", 1),
        ("db", "ok", "3", 4),
    ]


async def test_audit_can_be_switched_off(http: aiohttp.ClientSession, logs: pytest.LogCaptureFixture) -> None:
    async with (
        running_endpoint(audit=False) as endpoint,
        http.get(endpoint.url("/v1/secrets/db"), headers=endpoint.auth()) as response,
    ):
        assert response.status == 200
    assert audit_records(logs) == []


# -- token resolution ---------------------------------------------------------------------------------------


def test_generated_token_is_written_0440_atomically(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    output = tmp_path / "out" / "secrets"  # missing: created
    token = resolve_token(ServerConfig(), output)
    path = output / ".token"
    assert path.read_text() == token
    assert stat.S_IMODE(path.stat().st_mode) == TOKEN_FILE_MODE == 0o440
    assert len(token) >= 40
    assert os.listdir(output) == [".token"]  # no temporary file left behind
    assert token not in logged_text(logs)
    # A new start, a new token (replacing the read-only file).
    again = resolve_token(ServerConfig(), output)
    assert again != token
    assert path.read_text() == again


def test_configured_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert resolve_token(ServerConfig(token=TOKEN), tmp_path) == TOKEN
    assert list(tmp_path.iterdir()) == []


def test_token_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(TOKEN + "\n")
    assert resolve_token(ServerConfig(token_file=file), tmp_path / "out") == TOKEN
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"short-secret\n", "at least 16 characters"),
        (b"has a space in the middle\n", "spaces or control characters"),
        (b"\xff\xfe-not-utf8-at-all-0123456789", "not UTF-8"),
    ],
)
def test_bad_token_file_names_the_file_never_the_content(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    file = tmp_path / "token"
    file.write_bytes(content)
    with pytest.raises(AgentError) as caught:
        resolve_token(ServerConfig(token_file=file), tmp_path)
    message = str(caught.value)
    assert str(file) in message
    assert problem in message
    assert content.decode("utf-8", "replace").strip() not in message


def test_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(AgentError, match=r"server\.token_file .*nope: cannot read it"):
        resolve_token(ServerConfig(token_file=missing), tmp_path)


def test_unwritable_output_dir_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        output = blocker / "sub"  # cannot be created even by root
    else:
        output = tmp_path / "ro"
        output.mkdir(mode=0o500)
    with pytest.raises(AgentError, match="cannot write the endpoint token"):
        resolve_token(ServerConfig(), output)
