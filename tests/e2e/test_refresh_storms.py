"""What a local caller can make a real ``run`` agent ask Secret Manager: forced rounds are bounded.

``POST /v1/refresh`` and SIGHUP each ask for one check of every polled secret. A storm of them (a broken
sidecar in a loop, a hostile neighbour with the token) must not become a storm of AccessSecretVersion calls
against the project's quota: requests are coalesced (one round in flight, at most one queued) and forced
rounds start at least ``REFRESH_MIN_INTERVAL`` apart; the endpoint answers the rest 429 with Retry-After,
and signals that come too soon are deferred to the next allowed round, never lost.

The bound asserted is the design's, from the storm's own duration (not a speed): every round checks the
``POLLED`` secrets once, and at most ``elapsed / REFRESH_MIN_INTERVAL + 1`` rounds can start in a storm.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import requests

from tests.e2e.conftest import AgentProcess, Agents, Upstream, write_config
from tests.e2e.test_endpoint_e2e import TOKEN_HEADER, ready, start

REFRESH_MIN_INTERVAL = 1.0
"""The agent's default minimum interval between forced rounds (``agent.sync.REFRESH_MIN_INTERVAL``)."""
STORM = 2000
"""Requests (or signals) in one storm: the issue's reproduction."""
SECRETS = ("db-password", "api-key", "tls-key")
POLLED = len(SECRETS) + 1
"""Secrets checked by every round: ours and the canary (all ``latest``)."""


def start_agent(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> tuple[AgentProcess, str]:
    """A ``run`` agent that never polls on its own (1 h): every check it makes was forced."""
    for name in SECRETS:
        upstream.create(name, f"{name}-v1")
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": name, "ref": Upstream.ref(name)} for name in SECRETS],
        output_dir=str(output_dir),
        poll_interval="1h",
        poll_jitter=0,
    )
    agent, endpoint, probes = start(agents, "run", "-c", config)
    agent.wait_until(lambda: ready(probes), within=15, what="/readyz to answer 200")
    upstream.reset_counters()
    return agent, endpoint


def most_rounds(elapsed: float) -> int:
    """Forced rounds that can start within ``elapsed`` seconds: one at once, then one per interval."""
    return math.floor(elapsed / REFRESH_MIN_INTERVAL) + 1


def served(endpoint: str, token: str, name: str) -> bytes:
    return requests.get(f"{endpoint}/v1/secrets/{name}", headers={TOKEN_HEADER: token}, timeout=5).content


def test_a_refresh_storm_costs_a_bounded_number_of_backend_calls(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    agent, endpoint = start_agent(agents, upstream, output_dir, tmp_path)
    token = (output_dir / ".token").read_text().strip()
    upstream.add("db-password", "db-password-v2")

    statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    with requests.Session() as session:
        session.headers[TOKEN_HEADER] = token
        started = time.monotonic()
        for _ in range(STORM):
            response = session.post(f"{endpoint}/v1/refresh", timeout=10)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 429:
                retry_after.add(response.headers["Retry-After"])
                assert response.json() == {
                    "error": "refresh asked too soon after the last one: retry after Retry-After seconds"
                }
        elapsed = time.monotonic() - started
        calls = upstream.calls("AccessSecretVersion")

    assert set(statuses) <= {202, 429}, statuses
    assert statuses.get(202, 0) >= 1, "the first refresh is accepted"
    assert statuses.get(429, 0) >= 1, f"{STORM} refreshes in {elapsed:.1f}s were never refused: {statuses}"
    assert retry_after, "a 429 carries Retry-After"
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after), retry_after
    bound = POLLED * most_rounds(elapsed)
    assert calls <= bound, f"{STORM} refreshes in {elapsed:.1f}s cost {calls} AccessSecretVersion calls"
    # And a refresh still does its job: the version added before the storm is served (no poll for 1 h).
    agent.wait_until(
        lambda: served(endpoint, token, "db-password") == b"db-password-v2", what="the refreshed value"
    )
    assert agent.alive()


def test_a_sighup_storm_costs_a_bounded_number_of_backend_calls_and_the_last_one_is_not_lost(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    agent, endpoint = start_agent(agents, upstream, output_dir, tmp_path)
    token = (output_dir / ".token").read_text().strip()

    started = time.monotonic()
    for _ in range(STORM):
        agent.send(signal.SIGHUP)
    # Signals arrive faster than rounds can run: keep the storm up for a few intervals.
    while time.monotonic() - started < 3 * REFRESH_MIN_INTERVAL:
        agent.send(signal.SIGHUP)
    elapsed = time.monotonic() - started
    calls = upstream.calls("AccessSecretVersion")

    bound = POLLED * most_rounds(elapsed)
    assert calls <= bound, f"a SIGHUP storm of {elapsed:.1f}s cost {calls} AccessSecretVersion calls"
    # A signal that comes too soon is deferred, not dropped: a version added now is still fetched.
    upstream.add("api-key", "api-key-v2")
    agent.send(signal.SIGHUP)
    agent.wait_until(lambda: served(endpoint, token, "api-key") == b"api-key-v2", what="the deferred refresh")
    assert agent.alive()
