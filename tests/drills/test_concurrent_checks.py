"""Drill: a rotation seen twice at once — by its Pub/Sub event and by the safety poll — must never roll back.

With events on, two loops check Secret Manager: the event handler and the poll (``events.poll_interval``,
the safety net). With a slow backend (latency and jitter) their calls overlap and finish in any order; a
check that read ``latest`` earlier may finish later. Whatever the order, a secret must never be served at
an older version than one already written: the ``snapshot updated: db@N`` lines must only go up.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.e2e.conftest import PROJECT, Agents, Upstream, read_file, write_config

# Found by `make soak`: before every fetch was numbered (agent/sync.py), a check that read `latest` before
# another committed a newer version could commit its older value afterwards, about every second run.
pytestmark = pytest.mark.pubsub

ROTATIONS = 60


@pytest.fixture
def pubsub_host(pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    return pubsub_emulator


@pytest.fixture
def emulator(pubsub_host: str) -> Iterator[EmulatorEndpoints]:
    """Overrides the shared fixture: started after PUBSUB_EMULATOR_HOST is set, so it publishes events."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        yield endpoints


def test_overlapping_event_and_poll_checks_never_roll_a_secret_back(
    pubsub_host: str, agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    topic = f"projects/{PROJECT}/topics/secret-events-{uuid.uuid4().hex[:12]}"
    publisher = pubsub_v1.PublisherClient()
    try:
        publisher.create_topic(request={"name": topic}, timeout=30)
    finally:
        publisher.transport.close()
    upstream.client.create_secret(
        request={
            "parent": f"projects/{PROJECT}",
            "secret_id": "db",
            "secret": {"replication": {"automatic": {}}, "topics": [{"name": topic}]},
        }
    )
    upstream.add("db", "db-1")
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "db", "ref": Upstream.ref("db")}],
        output_dir=str(output_dir),
        events={"topic": topic, "max_delay": "0", "poll_interval": "200ms"},
        notify={"debounce": "0"},
    )
    agent = agents.start("run", "-c", config)
    agent.wait_for_log("events: caught up", within=20)

    upstream.set_faults({"AccessSecretVersion": {"jitter_ms": 1000}})
    for n in range(2, 2 + ROTATIONS):
        upstream.add("db", f"db-{n}")
        time.sleep(0.15)  # pacing the rotations; what is awaited below is checked, not slept on
    upstream.clear_faults()
    last = f"db-{1 + ROTATIONS}"
    agent.wait_until(lambda: read_file(output_dir, "db") == last.encode(), within=20, what="the last version")

    def written() -> list[int]:
        return [
            int(match.group(1))
            for message in agent.messages("INFO")
            if (match := re.search(r"^snapshot updated: .*\bdb@(\d+)", message))
        ]

    # The line is logged just after the files are swapped: on a busy machine it can come a moment later.
    agent.wait_until(lambda: 1 + ROTATIONS in written(), within=5, what="the last version's log line")
    served = written()
    rollbacks = [(a, b) for a, b in itertools.pairwise(served) if b < a]
    assert not rollbacks, f"db went back: {rollbacks} (versions written in order: {served})"
    assert served[-1] == 1 + ROTATIONS
