"""Drill: the agent is configured for Pub/Sub events, but Pub/Sub is down when it starts.

Expected: the agent starts anyway (secrets come from Secret Manager, events are only the fast path), warns
that Pub/Sub is unreachable, polls at the normal interval meanwhile (a rotation still arrives), keeps
trying, and once Pub/Sub is up creates its subscription, catches up, and takes rotations by event again.

Related: Pub/Sub going down (and coming back) while the agent runs is tests/e2e/test_events_e2e.py's
``test_pubsub_stopped_mid_run_polling_converges_and_events_resume_when_it_returns``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from testing import pubsub_emulator
from testing.pubsub_emulator import PubSubEmulator, PubSubEmulatorUnavailable, free_port
from tests.drills.conftest import Listeners
from tests.e2e.conftest import PROJECT, Agents, Upstream, read_file, write_config

pytestmark = pytest.mark.pubsub


@pytest.fixture
def pubsub_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A port for a Pub/Sub emulator that is not running yet; PUBSUB_EMULATOR_HOST points at it for our
    Secret Manager emulator (it publishes there) and for the agent."""
    try:
        pubsub_emulator.find_launcher()
        pubsub_emulator.find_java()
    except PubSubEmulatorUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    port = free_port()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    return port


@pytest.fixture
def emulator(pubsub_port: int) -> Iterator[EmulatorEndpoints]:
    """Overrides the shared fixture: started after PUBSUB_EMULATOR_HOST is set, so it publishes events."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        yield endpoints


@pytest.fixture
def late_pubsub(pubsub_port: int) -> Iterator[list[PubSubEmulator]]:
    """Where the test puts the Pub/Sub emulator it starts late; stopped afterwards."""
    started: list[PubSubEmulator] = []
    yield started
    for emulator in started:
        emulator.stop()


def start_pubsub(port: int, started: list[PubSubEmulator]) -> None:
    # start_pubsub_emulator() picks its own port; the agent already knows this one.
    emulator = pubsub_emulator._spawn(pubsub_emulator.find_launcher(), "127.0.0.1", port)
    started.append(emulator)
    pubsub_emulator._wait_until_ready(emulator, pubsub_emulator.START_TIMEOUT_SECONDS)


def test_events_configured_with_pubsub_down_poll_meanwhile_and_follow_events_once_it_is_up(
    pubsub_port: int,
    late_pubsub: list[PubSubEmulator],
    agents: Agents,
    upstream: Upstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    topic = f"projects/{PROJECT}/topics/secret-events-{uuid.uuid4().hex[:12]}"
    upstream.client.create_secret(
        request={
            "parent": f"projects/{PROJECT}",
            "secret_id": "db",
            "secret": {"replication": {"automatic": {}}, "topics": [{"name": topic}]},
        }
    )
    upstream.add("db", "db-v1")
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "db", "ref": Upstream.ref("db")}],
        output_dir=str(output_dir),
        poll_interval="1s",
        events={"topic": topic, "max_delay": "0", "poll_interval": "1h"},
        gcp={"backoff_initial": "200ms", "backoff_max": "1s"},
    )

    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready without Pub/Sub")
    warning = agent.wait_for_log("polling at the normal interval meanwhile", within=20, severity="WARNING")
    assert warning.startswith("events: "), warning
    assert f"127.0.0.1:{pubsub_port}" in warning, warning  # where it tried: the operator can check that
    assert listeners.metric("secrets_agent_events_connected") == 0

    upstream.add("db", "db-v2")  # no Pub/Sub: only the 1 s poll can bring it
    agent.wait_until(lambda: read_file(output_dir, "db") == b"db-v2", within=10, what="db-v2 by polling")

    start_pubsub(pubsub_port, late_pubsub)
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    publisher = pubsub_v1.PublisherClient()
    try:
        publisher.create_topic(request={"name": topic}, timeout=30)
    finally:
        publisher.transport.close()
    agent.wait_for_log("events: created subscription", within=30)
    agent.wait_for_log("events: caught up", within=15)
    assert listeners.metric("secrets_agent_events_connected") == 1

    upstream.add("db", "db-v3")
    agent.wait_until(lambda: read_file(output_dir, "db") == b"db-v3", within=15, what="db-v3 by event")
    by_event = [m for m in agent.messages() if re.search(r"SECRET_VERSION_ADD version 3 of db: ", m)]
    assert len(by_event) == 1, agent.messages()
    assert agent.stop(within=15) == 0
