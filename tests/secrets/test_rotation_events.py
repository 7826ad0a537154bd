"""The rotation policy create_secret sets makes Secret Manager send SECRET_ROTATE when the type's period
has passed (the emulator's clock moved through its admin API, events delivered by the Pub/Sub emulator)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from agent.secrets import SecretManager, SecretType
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from testing.pubsub_emulator import PubSubChannel, ReceivedMessage
from tests.secrets.conftest import PROJECT

pytestmark = pytest.mark.pubsub


def advance(endpoints: EmulatorEndpoints, delta: timedelta) -> None:
    response = requests.post(
        f"{endpoints.admin_url}/clock:advance", json={"seconds": delta.total_seconds()}, timeout=10
    )
    assert response.status_code == 200, response.text


def rotated(messages: list[ReceivedMessage]) -> list[str]:
    return sorted(
        m.attributes["secretId"].rsplit("/", 1)[-1]
        for m in messages
        if m.attributes.get("eventType") == "SECRET_ROTATE"
    )


async def test_secret_rotate_fires_after_each_types_period(pubsub: PubSubChannel) -> None:
    # Started after PUBSUB_EMULATOR_HOST is set (by the pubsub fixture), so it publishes events.
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        async with SecretManager(PROJECT, endpoint=endpoints.grpc_target, topics=[pubsub.topic]) as sm:
            await sm.create_secret("api", "a", SecretType.API_KEY)
            await sm.create_secret("db", "d", SecretType.DATABASE)
            await sm.create_secret("cert", "c", SecretType.TLS_CERT)
            pubsub.pull_count(6)  # SECRET_CREATE + SECRET_VERSION_ADD for each

            advance(endpoints, timedelta(days=31))  # past 30 days: the API key only
            assert rotated(pubsub.pull_until(lambda got: bool(rotated(got)))) == ["api"]

            # After a rotation, the engine moves the schedule; the service then fires at that time.
            info = await sm.get_secret_info("db")
            assert info.next_rotation_time is not None
            await sm.set_next_rotation_time("db", info.next_rotation_time - timedelta(days=50))
            advance(endpoints, timedelta(days=10))  # day 41: db's moved time (day 40) has passed
            got = pubsub.pull_until(lambda got: bool(rotated(got)))
            assert rotated(got) == ["db"]
            # TLS certificates never get a policy, so cert-manager's renewals are not ours to chase.
            assert (await sm.get_secret_info("cert")).next_rotation_time is None
