"""The running webhook over HTTPS, against hostile pods: the issue's flood is refused at once, a review runs
off the event loop (``/healthz`` answers meanwhile) and within a deadline, an oversized body gets a clear
413, and values the agent would misread (control characters, its own file names) are refused."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.webhook import server
from agent.webhook.review import answer_review
from agent.webhook.settings import InjectorSettings
from tests.webhook.conftest import Webhook
from tests.webhook.helpers import DB_REF, PROJECT, make_pod, ours, review

CANARY = "canary-bounds-2c9e-if-you-read-this-it-leaked"


async def refused(webhook: Webhook, values: dict[str, str]) -> str:
    status, body = await webhook.post(review(make_pod(ours(values))))
    assert status == 200, body
    assert body["response"]["allowed"] is False, body
    message: str = body["response"]["status"]["message"]
    return message


async def test_the_issue_s_flood_is_refused_with_one_line_naming_the_cap(webhook: Webhook) -> None:
    values = {"inject": "true", "project": PROJECT}
    for index in range(600):  # past the cap (the issue's 250 pairs are under it: refused key by key)
        values[f"secret-s{index:04d}"] = f"db{index}"
        values[f"secre-s{index:04d}"] = "x"  # a near miss of secret-s...
    message = await refused(webhook, values)
    assert message.startswith("secrets-agent.io/*: 1202 annotations under secrets-agent.io/; at most 1145")
    assert "unknown annotation" not in message  # one problem, not 500


class Blocked:
    """``answer_review`` held until released (or 5 s), recording whether it returned."""

    def __init__(self) -> None:
        self.entered, self.release, self.returned = threading.Event(), threading.Event(), threading.Event()
        self.real = answer_review

    def __call__(self, raw: bytes, settings: InjectorSettings, resolver: Any = None) -> Any:
        self.entered.set()
        self.release.wait(5)
        try:
            return self.real(raw, settings, resolver)
        finally:
            self.returned.set()


@pytest.fixture
async def blocked(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Blocked]:
    hold = Blocked()
    monkeypatch.setattr(server, "answer_review", hold)
    yield hold
    hold.release.set()


async def test_healthz_is_answered_while_a_review_runs(webhook: Webhook, blocked: Blocked) -> None:
    posted = asyncio.create_task(
        webhook.post(review(make_pod(ours({"inject": "true", "secret-db": DB_REF}))))
    )
    assert await asyncio.to_thread(blocked.entered.wait, 10)
    async with webhook.session.get(webhook.url + "/healthz") as response:
        assert response.status == 200
    # Answered while the review was still held: it is not on the event loop.
    assert not blocked.returned.is_set()
    blocked.release.set()
    status, body = await posted
    assert status == 200
    assert body["response"]["allowed"] is True


async def test_a_review_not_decided_in_time_gets_a_503_json_error(
    webhook: Webhook, blocked: Blocked, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "REVIEW_DEADLINE", 0.2)
    status, body = await webhook.post(review(make_pod(ours({"inject": "true", "secret-db": DB_REF}))))
    assert status == 503
    assert body == {"error": "the review was not decided within 0.2 s (the webhook is busy)"}
    blocked.release.set()


async def chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 65536 + 1):
        yield b" " * 65536


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_gets_a_clear_413(webhook: Webhook, chunked: bool) -> None:
    size = server.MAX_BODY + 1
    data: Any = chunks(size) if chunked else io.BytesIO(b" " * size)
    async with webhook.session.post(webhook.url + "/mutate", data=data) as response:
        assert response.status == 413
        assert await response.json() == {"error": "the body is larger than 3 MiB, the API server's own limit"}


@pytest.mark.parametrize("value", ["/secrets\x00", "/sec\nrets", f"/{CANARY}\u2028"])
async def test_control_characters_in_the_output_path_are_refused(webhook: Webhook, value: str) -> None:
    message = await refused(webhook, {"inject": "true", "secret-db": DB_REF, "output-path": value})
    assert message.startswith("secrets-agent.io/output-path: must not contain")
    assert CANARY not in message


async def test_a_newline_in_a_reference_is_refused_unquoted(webhook: Webhook) -> None:
    message = await refused(webhook, {"inject": "true", "secret-db": f"{CANARY}\nprojects/p/secrets/s"})
    assert message.startswith("secrets-agent.io/secret-db: must not contain")
    assert CANARY not in message


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"env-file": ".notified"}, "env-file"),
        ({"env-file": "..data"}, "env-file"),
        ({"secret-.token": DB_REF}, "secret-.token"),
        ({"secret-.notified": DB_REF}, "secret-.notified"),
        ({"env-file": "db/app.env"}, "env-file"),
    ],
    ids=["env-notified", "env-data", "name-token", "name-notified", "env-inside-secret"],
)
async def test_the_agent_s_own_file_names_are_refused(
    webhook: Webhook, extra: dict[str, str], key: str
) -> None:
    message = await refused(webhook, {"inject": "true", "secret-db": DB_REF, **extra})
    assert message.startswith(f"secrets-agent.io/{key}: "), message
