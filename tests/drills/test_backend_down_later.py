"""Drill: Secret Manager goes away while the agent runs (the emulator process is SIGKILLed), then comes back.

Last-known-good: the files and the endpoint keep serving what the agent had; the staleness metric grows;
/readyz fails once nothing was checked for ``max_staleness`` (liveness stays green: stale is not dead); when
the backend is back on the same port the agent catches up on its own and is ready again.

Related: readiness is also tested with injected UNAVAILABLE faults, in tests/e2e/test_endpoint_e2e.py
(``test_readiness_fails_after_max_staleness_and_recovers_with_the_backend``); here the backend is really gone.
"""

from __future__ import annotations

from pathlib import Path

import requests

from tests.drills.conftest import (
    Backend,
    Listeners,
    assert_values_not_logged,
    read_through_data,
    seed_backend,
)
from tests.e2e.conftest import Agents, Upstream, write_config

STALENESS = "secrets_agent_staleness_seconds"


def test_last_known_good_is_served_staleness_grows_readiness_fails_and_recovers(
    backend: Backend, backend_agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    old, new = "api-key-value-before-3c1f", "api-key-value-after-8d2e"
    up = seed_backend(backend, {"api-key": old})
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "api-key", "ref": Upstream.ref("api-key")}],
        output_dir=str(output_dir),
        poll_interval="0.3s",
        max_staleness="2s",
        gcp={"backoff_initial": "100ms", "backoff_max": "500ms", "call_timeout": "1s"},
    )
    agent = backend_agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")

    backend.stop()
    agent.wait_until(
        lambda: (listeners.metric(STALENESS, secret="api-key") or 0) > 1.0,
        within=15,
        what="the staleness metric to pass 1 s",
    )
    first = listeners.metric(STALENESS, secret="api-key")
    agent.wait_until(lambda: not listeners.ready(), within=15, what="/readyz to fail after max_staleness")
    reasons = listeners.not_ready_reasons()
    assert any("api-key" in reason for reason in reasons), reasons
    second = listeners.metric(STALENESS, secret="api-key")
    assert first is not None
    assert second is not None
    assert second > first, (first, second)
    assert second >= 2.0
    assert (listeners.metric("secrets_agent_backend_errors_total", code="UNAVAILABLE") or 0) >= 1
    # Last-known-good, from the files and from the endpoint alike; the agent is alive, only not ready.
    assert read_through_data(output_dir, "api-key") == old.encode()
    served = listeners.get("api-key")
    assert served.status_code == 200
    assert served.content == old.encode()
    assert requests.get(f"{listeners.probes}/healthz", timeout=5).status_code == 200
    assert any(
        "checking api-key failed (transient, UNAVAILABLE)" in m and "keeping the last known good value" in m
        for m in agent.messages("WARNING")
    )

    backend.start()  # the same port and secrets; a version added while it was gone would be there too
    up.add("api-key", new)
    agent.wait_until(
        lambda: read_through_data(output_dir, "api-key") == new.encode(), within=20, what="the new version"
    )
    agent.wait_until(listeners.ready, within=10, what="ready again")
    assert listeners.get("api-key").content == new.encode()
    assert (listeners.metric(STALENESS, secret="api-key") or 99.0) < 2.0
    assert agent.stop() == 0
    assert_values_not_logged(agent, old, new)
