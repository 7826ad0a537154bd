"""Admission: each restarted pod's agent configuration, as the webhook injects it, one AdmissionReview per
pod.

The pods of the selection scenarios ask for ``SECRETS`` secrets by name and for one selection,
``secrets-agent.io/select-payments: "team=payments"``. At admission the webhook resolves the selection from a
shared listing (cached, rate-limited: ``--selection-cache-ttl``, ``--listings-per-minute``) and writes its ids
into the injected configuration (``select[].known``, ``known_at``, ``fleet.size``), so that the agents start
without listing. Those listings are the fleet's, not a pod's: the webhook makes them once per cache period
whatever the number of pods, so the benchmark does not scale them with the fleet (the agents' are x50).

``admit`` posts the reviews to the real webhook (``python -m agent webhook --resolve-selections ...`` over
HTTPS, a trustme certificate) and takes the configuration from the JSONPatch (the
``SECRETS_AGENT_CONFIG_YAML`` env var of the injected container). ``nothing_known`` is a pod's configuration
without known ids (the variant in which every agent lists at start).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from bench.fleet.world import PROJECT, SECRETS, SELECT_LABEL, SELECT_NAME, TOPIC, secret_id
from testing.admission import admission_review
from testing.emulator_process import EmulatorProcess

PREFIX = "secrets-agent.io/"
CONFIG_ENV = "SECRETS_AGENT_CONFIG_YAML"
LISTINGS_PER_MINUTE = 30
LISTING_TIMEOUT = 2.0
REVIEW_CONNECTIONS = 8
WEBHOOK_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Admitted:
    """The configuration injected into each pod, and what admission cost."""

    configs: list[str]
    """Per pod, the agent configuration (YAML)."""
    seconds: float
    """Wall time from the first review to the last answer."""


def pod_annotations(events: bool) -> dict[str, str]:
    """A pod of the fleet: ``SECRETS`` secrets by name and the selection (events when ``events``)."""
    out = {PREFIX + "inject": "true", PREFIX + "project": PROJECT}
    for i in range(SECRETS):
        out[f"{PREFIX}secret-{secret_id(i)}"] = secret_id(i)
    out[f"{PREFIX}select-{SELECT_NAME}"] = f"{SELECT_LABEL[0]}={SELECT_LABEL[1]}"
    if events:
        out[PREFIX + "events-topic"] = TOPIC
    return out


def pod_config(
    fleet_size: int, events: bool, known: list[str] | None = None, known_at: float | None = None
) -> str:
    """A pod's configuration as the webhook writes it (with ``known`` ids) or without any known id."""
    select: dict[str, Any] = {"name": SELECT_NAME, "labels": {SELECT_LABEL[0]: SELECT_LABEL[1]}}
    if known is not None:
        select.update(known=known, known_at=known_at)
    document: dict[str, Any] = {
        "project": PROJECT,
        "secrets": [{"name": secret_id(i), "ref": secret_id(i)} for i in range(SECRETS)],
        "select": [select],
        "fleet": {"size": fleet_size},
    }
    if events:
        document["events"] = {"topic": TOPIC}
    return yaml.safe_dump(document, sort_keys=False)


def nothing_known(pods: int, fleet_size: int, events: bool) -> list[str]:
    return [pod_config(fleet_size, events) for _ in range(pods)]


def admit(
    ep: EmulatorProcess, work: Path, pods: int, fleet_size: int, events: bool, cache_ttl: float
) -> Admitted:
    """One AdmissionReview per pod, to the webhook: each pod's configuration."""
    work.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_admit_with_webhook(ep, work, pods, fleet_size, events, cache_ttl))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _admit_with_webhook(
    ep: EmulatorProcess, work: Path, pods: int, fleet_size: int, events: bool, cache_ttl: float
) -> Admitted:
    import aiohttp
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = work / "webhook.crt", work / "webhook.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    port = _free_port()
    argv = [sys.executable, "-m", "agent", "webhook", "--listen", f"127.0.0.1:{port}"]
    argv += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--log-level", "warning"]
    argv += ["--resolve-selections", "--secret-manager-endpoint", ep.grpc_target]
    argv += ["--selection-cache-ttl", f"{cache_ttl:g}s", "--listings-per-minute", str(LISTINGS_PER_MINUTE)]
    argv += ["--listing-timeout", f"{LISTING_TIMEOUT:g}s", "--fleet-size", str(fleet_size)]
    url = f"https://127.0.0.1:{port}"
    with (work / "webhook.log").open("ab") as log, _process(argv, log) as process:
        connector = aiohttp.TCPConnector(ssl=client_context, limit=REVIEW_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:
            await _wait_healthy(session, url, process)
            started = time.monotonic()
            gate = asyncio.Semaphore(REVIEW_CONNECTIONS)
            body = pod_annotations(events)

            async def one() -> str:
                async with gate:
                    return await _review(session, url, body)

            configs = await asyncio.gather(*(one() for _ in range(pods)))
            took = time.monotonic() - started
    return Admitted(list(configs), took)


@contextmanager
def _process(argv: list[str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_healthy(session: Any, url: str, process: subprocess.Popen[bytes]) -> None:
    import aiohttp

    deadline = time.monotonic() + WEBHOOK_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the webhook exited ({process.returncode}): see webhook.log")
        try:
            async with session.get(url + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the webhook did not answer /healthz in time")


async def _review(session: Any, url: str, annotations: dict[str, str]) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }
    review = admission_review(pod)
    async with session.post(url + "/mutate", json=review) as response:
        answer: dict[str, Any] = await response.json()
    verdict = answer.get("response", {})
    if response.status != 200 or not verdict.get("allowed") or "patch" not in verdict:
        raise RuntimeError(f"the webhook did not inject the pod: {str(answer)[:300]}")
    patch = json.loads(base64.b64decode(verdict["patch"]))
    found = _config_env(patch)
    if found is None:
        raise RuntimeError(f"no {CONFIG_ENV} in the webhook's patch")
    return found


def _config_env(node: object) -> str | None:
    """The value of the env var ``CONFIG_ENV`` anywhere in a JSONPatch."""
    if isinstance(node, dict):
        if node.get("name") == CONFIG_ENV and isinstance(node.get("value"), str):
            return str(node["value"])
        nodes: list[object] = list(node.values())
    elif isinstance(node, list):
        nodes = list(node)
    else:
        return None
    for child in nodes:
        found = _config_env(child)
        if found is not None:
            return found
    return None
