"""Drill: a secret the agent serves is deleted upstream while it runs (NOT_FOUND from then on).

Expected: never delete a file because the backend said no. The agent keeps serving the last known good
value from its files and its endpoint, warns naming the secret and NOT_FOUND, and becomes not ready after
``max_staleness`` (an operator must look: the secret is gone). A secret re-created under the same name is
picked up without a restart.
"""

from __future__ import annotations

from pathlib import Path

from tests.drills.conftest import Listeners, assert_values_not_logged, read_through_data
from tests.e2e.conftest import Agents, Upstream, write_config


def test_a_deleted_secret_keeps_its_last_value_warns_and_a_recreated_one_is_picked_up(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    old, recreated = "session-key-original-2b6d", "session-key-recreated-e470"
    upstream.create("session-key", "session-key-v1-a93c", old)  # served: version 2
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "session-key", "ref": Upstream.ref("session-key")}],
        output_dir=str(output_dir),
        poll_interval="0.3s",
        max_staleness="2s",
        gcp={"backoff_initial": "100ms", "backoff_max": "500ms"},
    )
    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")

    upstream.client.delete_secret(request={"name": Upstream.ref("session-key")})
    warning = agent.wait_for_log("checking session-key failed", within=15, severity="WARNING")

    assert "NOT_FOUND" in warning, warning
    assert "keeping the last known good value" in warning, warning
    agent.wait_until(lambda: not listeners.ready(), within=15, what="not ready after max_staleness")
    assert any("session-key" in reason for reason in listeners.not_ready_reasons())
    assert read_through_data(output_dir, "session-key") == old.encode()
    assert (output_dir / "session-key").read_bytes() == old.encode()
    served = listeners.get("session-key")
    assert served.status_code == 200
    assert served.content == old.encode()
    assert served.headers["X-Secret-Version"] == "2"
    assert (listeners.metric("secrets_agent_backend_errors_total", code="NOT_FOUND") or 0) >= 1
    assert agent.alive()

    upstream.create("session-key", recreated)  # a new secret of the same name: its version 1
    agent.wait_until(
        lambda: read_through_data(output_dir, "session-key") == recreated.encode(),
        within=15,
        what="the re-created secret's value",
    )
    agent.wait_until(listeners.ready, within=10, what="ready again")
    served = listeners.get("session-key")
    assert served.content == recreated.encode()
    assert served.headers["X-Secret-Version"] == "1"
    assert agent.stop() == 0
    assert_values_not_logged(agent, old, recreated)
