"""Selections resolved at admission, with real parts: the webhook's HTTPS server (trustme), its listing
cache on the real lister (``agent.webhook.lister``: the agent's GcpSource) against the emulator, secrets
created with the official client, ListSecrets counted by the emulator's admin counters, and the real agent
(``python -m agent init``) given the configuration the webhook injected."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests
import yaml
from google.cloud import secretmanager_v1

from agent.config import CONFIG_YAML_ENV
from agent.webhook.lister import SecretManagerLister
from agent.webhook.listings import ListingCache
from agent.webhook.settings import InjectorSettings
from agent_emulator.server import EmulatorEndpoints
from tests.webhook.conftest import Webhook
from tests.webhook.helpers import PROJECT, find, make_pod, ours, review

CANARY = "canary-value-7f3a9c-never-logged"
"""Every secret's value: it must appear in no output of the webhook, and in the agent's files only."""


class Clock:
    """A monotonic clock the test moves (the cache's TTL), beside the real wall clock (``known_at``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lister(emulator: EmulatorEndpoints) -> Iterator[SecretManagerLister]:
    made = SecretManagerLister(emulator.grpc_target)
    yield made
    made.close()


@pytest.fixture
def per_minute() -> int:
    return 30


@pytest.fixture
def resolver(lister: SecretManagerLister, clock: Clock, per_minute: int) -> ListingCache:
    return ListingCache(lister, ttl=60.0, per_minute=per_minute, timeout=2.0, monotonic=clock)


@pytest.fixture
def injector_settings() -> InjectorSettings:
    return InjectorSettings(project=PROJECT, fleet_size=10_000)


def create(client: secretmanager_v1.SecretManagerServiceClient, secret_id: str, **labels: str) -> None:
    secret = client.create_secret(
        parent=f"projects/{PROJECT}", secret_id=secret_id, secret=secretmanager_v1.Secret(labels=labels)
    )
    payload = secretmanager_v1.SecretPayload(data=CANARY.encode())
    client.add_secret_version(parent=secret.name, payload=payload)


@pytest.fixture
def labelled(client: secretmanager_v1.SecretManagerServiceClient, emulator: EmulatorEndpoints) -> None:
    create(client, "pay-db", team="payments", env="prod")
    create(client, "pay-api", team="payments", env="prod")
    create(client, "pay-dev", team="payments", env="dev")
    create(client, "shop-db", team="shop", env="prod")
    reset_counters(emulator)


def reset_counters(emulator: EmulatorEndpoints) -> None:
    requests.post(f"{emulator.admin_url}/counters:reset", json={}, timeout=10).raise_for_status()


def set_faults(emulator: EmulatorEndpoints, faults: dict[str, Any]) -> None:
    requests.put(f"{emulator.admin_url}/faults", json=faults, timeout=10).raise_for_status()


def list_calls(emulator: EmulatorEndpoints) -> int:
    methods = requests.get(f"{emulator.admin_url}/counters", timeout=10).json()["methods"]
    return sum(methods.get("ListSecrets", {}).values())


def selection_pod(
    name: str = "pay", labels: str = "team=payments,env=prod", **options: str
) -> dict[str, Any]:
    annotations = {"inject": "true", f"select-{name}": labels, f"select-{name}-env-prefix": "PAY_"}
    annotations.update({f"select-{name}-{key.replace('_', '-')}": value for key, value in options.items()})
    return make_pod(ours(annotations))


async def admit(webhook: Webhook, pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the response, the pod's injected configuration)."""
    status, body = await webhook.post(review(pod))
    assert status == 200, body
    response = body["response"]
    assert response["allowed"], response
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(pod, patch)
    (env,) = [e["value"] for e in find(patched, "secrets-agent-init")["env"] if e["name"] == CONFIG_YAML_ENV]
    return response, yaml.safe_load(env)


def selection_warnings(response: dict[str, Any]) -> list[str]:
    return [w for w in response.get("warnings", []) if "select-" in w]


@pytest.mark.usefixtures("labelled")
async def test_a_pod_s_selection_gets_the_ids_it_matches_and_the_listing_s_time(
    webhook: Webhook, emulator: EmulatorEndpoints
) -> None:
    before = time.time()
    response, config = await admit(webhook, selection_pod())
    (select,) = config["select"]
    assert select["known"] == ["pay-api", "pay-db"]
    assert before - 1 <= select["known_at"] <= time.time()
    assert config["fleet"] == {"size": 10_000}
    assert selection_warnings(response) == []
    assert list_calls(emulator) == 1


@pytest.mark.usefixtures("labelled")
async def test_fifty_admissions_at_once_make_one_listing_and_the_ttl_holds(
    webhook: Webhook, emulator: EmulatorEndpoints, clock: Clock
) -> None:
    answers = await asyncio.gather(*(admit(webhook, selection_pod()) for _ in range(50)))
    assert {tuple(config["select"][0]["known"]) for _, config in answers} == {("pay-api", "pay-db")}
    assert list_calls(emulator) == 1
    listed_at = answers[0][1]["select"][0]["known_at"]

    clock.now += 59  # within the TTL: served from the cache
    _, config = await admit(webhook, selection_pod())
    assert (config["select"][0]["known_at"], list_calls(emulator)) == (listed_at, 1)

    clock.now += 2  # past it: served at once with its real time, refreshed in the background
    _, config = await admit(webhook, selection_pod())
    assert config["select"][0]["known_at"] == listed_at
    for _ in range(100):
        if list_calls(emulator) == 2:
            break
        await asyncio.sleep(0.05)
    _, config = await admit(webhook, selection_pod())
    assert config["select"][0]["known_at"] > listed_at
    assert list_calls(emulator) == 2


@pytest.mark.usefixtures("labelled")
async def test_selections_of_one_listing_share_it_and_each_takes_its_own_ids(
    webhook: Webhook, emulator: EmulatorEndpoints
) -> None:
    # Same filter (team=payments), then each selection's own prefix: one listing, two answers.
    pod = make_pod(
        ours(
            {
                "inject": "true",
                "select-a": "team=payments",
                "select-a-name-prefix": "pay-d",
                "select-a-env-prefix": "A_",
                "select-a-file-prefix": "a/",
                "select-b": "team=payments",
                "select-b-name-regex": "api$",
                "select-b-env-prefix": "B_",
                "select-b-file-prefix": "b/",
            }
        )
    )
    _, config = await admit(webhook, pod)
    known = {item["name"]: item["known"] for item in config["select"]}
    assert known == {"a": ["pay-db", "pay-dev"], "b": ["pay-api"]}
    assert list_calls(emulator) == 2  # name_prefix narrows a's listing on Google's side: another key


@pytest.mark.usefixtures("labelled")
async def test_an_exhausted_read_quota_admits_the_pod_without_known_ids_and_warns(
    webhook: Webhook, emulator: EmulatorEndpoints, caplog: pytest.LogCaptureFixture
) -> None:
    set_faults(emulator, {"quotas": {"read_per_minute": 0}})
    response, config = await admit(webhook, selection_pod())
    (select,) = config["select"]
    assert "known" not in select
    assert "known_at" not in select
    (warning,) = selection_warnings(response)
    assert warning.startswith("secrets-agent: secrets-agent.io/select-pay: not resolved at admission (")
    assert "RESOURCE_EXHAUSTED" in warning
    assert "\n" not in warning
    assert "Traceback" not in warning
    assert "Traceback" not in caplog.text
    assert any("selection listing failed" in r.getMessage() for r in caplog.records)
    assert CANARY not in caplog.text + json.dumps(response)

    # The failure is held: the pods after it do not spend the rate on the same failing listing.
    calls = list_calls(emulator)
    await admit(webhook, selection_pod())
    assert list_calls(emulator) == calls


@pytest.mark.usefixtures("labelled")
@pytest.mark.parametrize("per_minute", [5])
async def test_the_rate_limit_holds_over_many_distinct_selections(
    webhook: Webhook, emulator: EmulatorEndpoints, per_minute: int
) -> None:
    """The security property: whatever pods ask for, a replica lists at most --listings-per-minute times
    a minute (here 5), and a pod can ask for at most MAX_SELECTIONS keys."""
    unresolved = 0
    for index in range(30):
        response, config = await admit(webhook, selection_pod(labels=f"team=payments,n{index}=*"))
        if "known" not in config["select"][0]:
            unresolved += 1
            (warning,) = selection_warnings(response)
            assert "--listings-per-minute" in warning
    assert list_calls(emulator) == per_minute
    assert unresolved == 30 - per_minute


async def test_a_required_selection_that_matches_nothing_is_admitted_with_a_warning(
    webhook: Webhook, emulator: EmulatorEndpoints
) -> None:
    response, config = await admit(webhook, selection_pod(labels="team=nobody", required="true"))
    assert config["select"][0]["known"] == []
    (warning,) = selection_warnings(response)
    assert "required and matches no secret now" in warning


@pytest.mark.usefixtures("labelled")
async def test_the_agent_delivers_what_the_webhook_resolved_without_listing(
    webhook: Webhook, emulator: EmulatorEndpoints, tmp_path: Path
) -> None:
    _, config = await admit(webhook, selection_pod())
    reset_counters(emulator)
    output = Path("/dev/shm") / f"secrets-agent-test-{os.getpid()}-{tmp_path.name}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        CONFIG_YAML_ENV: yaml.safe_dump(config),
        "SECRETS_AGENT_OUTPUT_DIR": str(output),
        "SECRET_MANAGER_EMULATOR_HOST": emulator.grpc_target,
    }
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agent", "init", "--log-level", "debug"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert (output / "pay-db").read_text() == CANARY
        assert (output / "pay-api").read_text() == CANARY
        assert not (output / "pay-dev").exists()
        assert CANARY not in done.stdout + done.stderr
    finally:
        shutil.rmtree(output, ignore_errors=True)
    assert list_calls(emulator) == 0
