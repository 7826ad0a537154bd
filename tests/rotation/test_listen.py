"""``secrets-agent rotate --listen`` against the official Pub/Sub emulator and our Secret Manager emulator.

The Secret Manager emulator publishes SECRET_ROTATE to a secret's topic when its clock passes the
secret's next_rotation_time, as the service does; the listener (a real process) rotates the secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from agent.rotation.listen import Listener as RotationListener
from agent.rotation.listen import ListenError, ListenOptions
from agent.rotation.lock import ANNOTATION, Holder, RotationState
from agent.secrets.interface import SecretsBackend
from agent.secrets.manager import SecretManager
from agent.secrets.types import SecretType
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from testing.pubsub_emulator import PubSubChannel
from tests.rotation.helpers_engine import CANARY, PROJECT, Programs, advance_clock, command_settings

pytestmark = pytest.mark.pubsub

OLD = f"{CANARY}-old-listen-value"
WAIT = 30.0


@pytest.fixture
def upstream(pubsub: PubSubChannel) -> Iterator[EmulatorEndpoints]:
    """Our Secret Manager emulator, started after PUBSUB_EMULATOR_HOST is set so that it publishes events."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        yield endpoints


@pytest.fixture
async def sm(upstream: EmulatorEndpoints, pubsub: PubSubChannel) -> AsyncIterator[SecretManager]:
    async with SecretManager(PROJECT, endpoint=upstream.grpc_target, topics=[pubsub.topic]) as m:
        yield m


class Listener:
    """A ``rotate --listen`` process whose stderr (JSON lines) is read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.raw.append(line)
                if line.startswith("{"):
                    self.lines.append(json.loads(line))
                self._changed.notify_all()

    def wait_for(self, what: str, found: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for line in self.lines:
                    if found(line):
                        return line
                remaining = deadline - time.monotonic()
                problem = f"no {what}; stderr:\n{''.join(self.raw)}"
                assert remaining > 0, problem
                assert self.process.poll() is None, problem
                self._changed.wait(min(remaining, 0.5))

    def rotations(self, secret: str) -> list[dict[str, Any]]:
        with self._changed:
            return [
                line
                for line in self.lines
                if line.get("logger") == "agent.rotation.engine" and line.get("secret") == secret
            ]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


def publish(channel: PubSubChannel, kind: str, secret: str) -> None:
    """An event published by hand, as Secret Manager would send it."""
    attributes = {
        "eventType": kind,
        "dataFormat": "JSON_API_V1",
        "secretId": f"projects/{PROJECT}/secrets/{secret}",
    }
    channel.publisher.publish(channel.topic, b"{}", **attributes).result(timeout=10)


def our_subscriptions(channel: PubSubChannel) -> list[str]:
    names = channel.publisher.list_topic_subscriptions(request={"topic": channel.topic})
    return [name for name in names if "/secrets-agent-rotate-" in name]


async def test_secret_rotate_events_rotate_the_secret_they_name(
    upstream: EmulatorEndpoints, sm: SecretManager, pubsub: PubSubChannel, tmp_path: Path
) -> None:
    programs_dir = tmp_path / "programs"
    programs_dir.mkdir()
    programs = Programs(programs_dir)
    await sm.create_secret("api", OLD, SecretType.API_KEY)  # 30 days: SECRET_ROTATE once the clock passes it
    await sm.create_secret("busy", OLD, SecretType.API_KEY)
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)  # 180 days: not due
    config = tmp_path / "rotation.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "topics": [pubsub.topic],
                "secrets": {"api": command_settings(programs), "busy": command_settings(programs)},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    env["SECRET_MANAGER_EMULATOR_HOST"] = upstream.grpc_target
    listener = Listener(
        [sys.executable, "-m", "agent", "rotate", "--listen", "--config", str(config), "--project", PROJECT],
        env,
    )
    try:
        listener.wait_for(
            "listening line", lambda line: str(line["message"]).startswith("listening for SECRET_ROTATE")
        )
        [created] = our_subscriptions(pubsub)  # the topic from the config file, a subscription of its own
        # Another rotation holds "busy" right now (on another host, fresh): the listener leaves it be.
        now = datetime.now(UTC)
        foreign = RotationState(
            "0badc0de", Holder("ops@build-7 pid 9", "build-7", 9), now, now, "validate", "1"
        )
        info = await sm.get_secret_info("busy")
        await sm.update_annotations("busy", {ANNOTATION: foreign.to_annotation()}, etag=info.etag)

        publish(pubsub, "SECRET_VERSION_ADD", "api")  # not a rotation event: acknowledged and ignored
        fired = advance_clock(upstream, 31 * 86400)
        assert fired["rotations_fired"] == 2  # api and busy; enc is not due

        rotated = listener.wait_for(
            "api rotated", lambda line: line.get("secret") == "api" and line.get("result") == "rotated"
        )
        locked = listener.wait_for(
            "busy locked", lambda line: line.get("secret") == "busy" and line.get("result") == "locked"
        )
        assert (rotated["old_version"], rotated["new_version"]) == ("1", "2")
        assert "rotation in progress: run 0badc0de" in str(locked["message"])
        assert {v.version: v.state for v in await sm.list_versions("api")} == {"1": "ENABLED", "2": "ENABLED"}
        assert (await sm.get_secret("api")).startswith(f"{CANARY}-key-")
        assert {v.version for v in await sm.list_versions("busy")} == {"1"}

        # A duplicate delivery of the event after the rotation does not rotate again.
        publish(pubsub, "SECRET_ROTATE", "api")
        listener.wait_for(
            "duplicate skipped", lambda line: line.get("secret") == "api" and line.get("result") == "skipped"
        )
        assert [line["result"] for line in listener.rotations("api")] == ["rotated", "skipped"]
        assert [line["result"] for line in listener.rotations("busy")] == ["locked"]  # acked, not redelivered
    finally:
        code = listener.stop()

    assert code == 0
    assert created not in our_subscriptions(pubsub)  # deleted on SIGTERM
    audit = [line for line in listener.lines if line.get("logger") == "agent.audit"]
    assert any(a["operation"] == "add" and a["secret"] == "api" and a["version"] == "2" for a in audit)
    assert any(a["operation"] == "rotate" and a["secret"] == "api" and a["result"] == "ok" for a in audit)
    assert CANARY not in "".join(listener.raw)


async def test_a_subscription_that_does_not_exist_is_refused_at_start_with_what_to_do(
    pubsub: PubSubChannel,
) -> None:
    """At start a listener fails (the CLI exits non-zero) instead of retrying in silence; once it runs,
    the shared subscription lifecycle reconnects by itself."""
    missing = f"{pubsub.subscription}-missing"
    listener = RotationListener(cast(SecretsBackend, object()), ListenOptions(subscription=missing))
    with pytest.raises(ListenError) as refused:
        await asyncio.wait_for(listener.run(asyncio.Event()), 30)
    assert str(refused.value) == (
        f"subscription {missing} does not exist: create it on the topic your secrets notify "
        "(gcloud pubsub subscriptions create ...)"
    )
    assert not listener.ready.is_set()
