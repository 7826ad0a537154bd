"""The local endpoint and the probes listener of a real ``run`` (and ``dev``) agent.

What an app and an operator see: the token file next to the secrets, secrets over HTTP, a long-poll that
wakes on rotation, readiness that follows the backend's health, metrics — and no backend call for a name
the agent does not serve.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CANARY, AgentProcess, Agents, Upstream, write_config

TOKEN_HEADER = "X-Secrets-Agent-Token"


def bound_port(agent: AgentProcess, pattern: str) -> int:
    """The port a listener reported in the agent's log (the tests listen on port 0)."""

    def found() -> int | None:
        for message in agent.messages():
            if match := re.search(pattern, message):
                return int(match.group(1))
        return None

    return agent.wait_until(found, within=15, what=f"a log line matching {pattern!r}")


def start(
    agents: Agents, command: str, *args: str | Path, env: Mapping[str, str] | None = None
) -> tuple[AgentProcess, str, str]:
    """Start the agent; return it with the base URLs of its endpoint and its probes."""
    agent = agents.start(command, *args, env=env)
    endpoint = bound_port(agent, r"local endpoint listening on http://127\.0\.0\.1:(\d+)")
    probes = bound_port(agent, r"probes listening on 127\.0\.0\.1:(\d+)")
    return agent, f"http://127.0.0.1:{endpoint}", f"http://127.0.0.1:{probes}"


def ready(probes: str) -> bool:
    return requests.get(f"{probes}/readyz", timeout=5).status_code == 200


def test_an_app_reads_its_secret_with_the_token_and_follows_a_rotation(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2-v1")
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "db-password", "ref": Upstream.ref("db-password")}],
        output_dir=str(output_dir),
        poll_interval="0.3s",
    )
    agent, endpoint, probes = start(agents, "run", "-c", config)
    agent.wait_until(lambda: ready(probes), within=15, what="/readyz to answer 200")

    # The generated token is where a container sharing the volume finds it, readable by the group only.
    token_file = output_dir / ".token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o440"
    token = token_file.read_text().strip()
    headers = {TOKEN_HEADER: token}

    assert requests.get(f"{endpoint}/v1/secrets/db-password", timeout=5).status_code == 401
    first = requests.get(f"{endpoint}/v1/secrets/db-password", headers=headers, timeout=5)
    assert first.status_code == 200
    assert first.content == b"hunter2-v1"
    assert first.headers["Cache-Control"] == "no-store"
    etag = first.headers["ETag"]

    # An unknown name is answered from what the agent serves: it never becomes a backend call.
    upstream.reset_counters()
    assert (
        requests.get(f"{endpoint}/v1/secrets/somebody-elses", headers=headers, timeout=5).status_code == 404
    )
    assert requests.get(f"{endpoint}/v1/secrets/..%2Ftoken", headers=headers, timeout=5).status_code in (
        400,
        404,
    )
    assert upstream.calls("AccessSecretVersion") < 30  # only the 0.3 s poll of db-password and the canary
    assert all(
        "somebody-elses" not in message for message in agent.messages() if "AccessSecretVersion" in message
    )

    # A long-poll wakes up on the rotation instead of waiting for its deadline.
    started = time.monotonic()
    upstream.add("db-password", "hunter2-v2")
    changed = requests.get(
        f"{endpoint}/v1/secrets/db-password",
        params={"wait": "20s"},
        headers={**headers, "If-None-Match": etag},
        timeout=30,
    )
    assert changed.status_code == 200
    assert changed.content == b"hunter2-v2"
    assert changed.headers["ETag"] != etag
    assert time.monotonic() - started < 20, "the long-poll returned at its deadline, not on the rotation"

    # The operator's view: metrics name the secret and count what happened, with no value in them.
    text = requests.get(f"{probes}/metrics", timeout=5).text
    assert CANARY not in text
    assert "hunter2" not in text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("secrets_agent_rotations_total", (("secret", "db-password"),))] >= 1
    assert samples[("secrets_agent_secret_version", (("secret", "db-password"),))] == 2
    assert samples[("secrets_agent_ready", ())] == 1
    route = (("code", "404"), ("route", "/v1/secrets/{name}"))
    assert samples[("secrets_agent_endpoint_requests_total", route)] >= 1

    # The audit log recorded the reads: name, version, client, result — never the value.
    audit = [r for r in agent.records() if r.get("logger") == "agent.audit"]
    assert audit, "no audit record of the reads"
    assert all("hunter2" not in str(r) for r in agent.records())


def test_readiness_fails_after_max_staleness_and_recovers_with_the_backend(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("api-key", "key-v1")
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "api-key", "ref": Upstream.ref("api-key")}],
        output_dir=str(output_dir),
        poll_interval="0.2s",
        max_staleness="1s",
    )
    agent, _, probes = start(agents, "run", "-c", config)
    agent.wait_until(lambda: ready(probes), within=15, what="ready after the bootstrap")

    upstream.set_faults({"*": {"unavailable": 1.0}})
    agent.wait_until(lambda: not ready(probes), within=15, what="/readyz to fail once the data is stale")
    reasons = requests.get(f"{probes}/readyz", timeout=5).json()["reasons"]
    assert any("api-key" in reason for reason in reasons)
    # Last-known-good: the file is still there and still right while the backend is down.
    assert (output_dir / "api-key").read_bytes() == b"key-v1"
    assert requests.get(f"{probes}/healthz", timeout=5).status_code == 200, "stale is not dead"

    upstream.clear_faults()
    agent.wait_until(lambda: ready(probes), within=15, what="ready again once the backend answers")


def test_dev_serves_the_same_endpoint_from_a_dotenv_file(
    agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("API_KEY=from-dotenv-1\n")
    agent, endpoint, probes = start(
        agents,
        "dev",
        "--dotenv",
        dotenv,
        "--secret",
        "api-key=api-key",
        "--project",
        "dev-project",
        "--output-dir",
        output_dir,
        env={"SECRETS_AGENT_SERVER_TOKEN": "dev-token-0123456789abcdef"},
    )
    agent.wait_until(lambda: ready(probes), within=15, what="dev to be ready")
    headers = {TOKEN_HEADER: "dev-token-0123456789abcdef"}
    response = requests.get(
        f"{endpoint}/v1/secrets/api-key", params={"format": "json"}, headers=headers, timeout=5
    )
    assert response.status_code == 200
    assert response.json()["value"] == "from-dotenv-1"
    # A configured token is used as is: no token file is written.
    assert not (output_dir / ".token").exists()
