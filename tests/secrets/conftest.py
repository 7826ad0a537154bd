"""Fixtures for the secrets API: a SecretManager on the emulator, audit events captured from the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests

from agent.observe.logs import FIELDS_KEY
from agent.secrets import SecretManager
from agent_emulator.server import EmulatorEndpoints

PROJECT = "test-project"
TOPIC = f"projects/{PROJECT}/topics/secret-events"
CALLER = "tests@ci pid 1"


@pytest.fixture
async def sm(emulator: EmulatorEndpoints) -> AsyncIterator[SecretManager]:
    """A SecretManager on the emulator with one notification topic (so rotation policies are stored)."""
    async with SecretManager(PROJECT, endpoint=emulator.grpc_target, topics=[TOPIC], caller=CALLER) as m:
        yield m


@pytest.fixture
async def sm_no_topics(emulator: EmulatorEndpoints) -> AsyncIterator[SecretManager]:
    async with SecretManager(PROJECT, endpoint=emulator.grpc_target, caller=CALLER) as m:
        yield m


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog at DEBUG for every logger, so no line escapes the canary checks."""
    caplog.set_level(logging.DEBUG)
    return caplog


def audit_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The structured fields of every ``agent.audit`` record captured."""
    return [dict(getattr(r, FIELDS_KEY)) for r in caplog.records if r.name == "agent.audit"]


def put_faults(emulator: EmulatorEndpoints, document: dict[str, Any]) -> None:
    response = requests.put(f"{emulator.admin_url}/faults", json=document, timeout=10)
    assert response.status_code == 200, response.text
