"""The audit log of secret reads: every read of an assigned secret, counted when repeated, never a value."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from agent.core.model import crc32c
from agent.endpoint.audit import AuditKey, AuditLog
from agent.endpoint.token import TOKEN_HEADER
from testing.logs import logged_text
from tests.endpoint.conftest import CANARY, WRONG_TOKEN, Endpoint, running_endpoint


def audit_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [dict(record.fields) for record in caplog.records if record.name == "agent.audit"]  # type: ignore[attr-defined]


# -- AuditLog, by itself ------------------------------------------------------------------------------------


async def test_identical_reads_are_one_line_then_one_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.audit")
    trail = AuditLog(window=3600)  # never ends by itself here: flush() ends it
    read = AuditKey("db", "3", "127.0.0.1", "ok", 200)
    for _ in range(3):
        trail.record(read)
    trail.record(read._replace(client="127.0.0.2"))  # another client: its own line
    assert [(r["client"], r["reads"]) for r in audit_records(caplog)] == [("127.0.0.1", 1), ("127.0.0.2", 1)]
    trail.flush()
    assert [(r["client"], r["reads"]) for r in audit_records(caplog)][2:] == [("127.0.0.1", 2)]
    assert [r.getMessage() for r in caplog.records][2] == "secret read: db ok (2 reads)"
    trail.flush()  # nothing counted since: nothing logged
    assert len(audit_records(caplog)) == 3


async def test_an_unknown_name_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.audit")
    trail = AuditLog()
    trail.record(AuditKey(None, None, "127.0.0.1", "unknown", 404))
    trail.flush()
    assert [r.getMessage() for r in caplog.records] == ["secret read: (unknown name) unknown"]
    assert audit_records(caplog) == [
        {
            "secret": None,
            "version": None,
            "client": "127.0.0.1",
            "result": "unknown",
            "status": 404,
            "reads": 1,
        }
    ]


# -- the audit log of a running endpoint ---------------------------------------------------------------------


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
