"""Drill: Secret Manager answers with payloads whose ``data_crc32c`` does not match (corruption in transit).

The files part of this drill (run keeps the old file until the payloads are sound again) is
tests/e2e/test_run.py::test_crc_corruption_keeps_the_old_value_until_the_payloads_are_sound_again. Here:
``init`` never writes a payload that failed its check, and ``run`` keeps serving the old value from its
endpoint too, counting DATA_LOSS in its metrics.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.drills.conftest import Listeners, assert_values_not_logged, read_through_data
from tests.e2e.conftest import Agents, Upstream, write_config


def test_init_writes_nothing_it_could_not_verify(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-value-never-verified")
    upstream.set_faults({"AccessSecretVersion": {"corrupt_crc": 1.0}})
    config = write_config(
        tmp_path / "agent.yaml", [{"name": "db", "ref": Upstream.ref("db")}], output_dir=str(output_dir)
    )

    result = agents.run("init", "-c", config, "--timeout", "2s")

    assert result.returncode == 1
    [line] = [m for m in result.messages("ERROR") if m.startswith("required secret failed: db <- ")]
    assert ": DATA_LOSS: " in line, line
    assert not os.path.lexists(output_dir / "db")
    assert "db-value-never-verified" not in result.stdout + result.stderr


def test_run_serves_the_verified_value_from_its_endpoint_while_payloads_are_corrupted(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    old, new = "db-value-verified-4f0c", "db-value-corrupted-in-transit-b81e"
    upstream.create("db", old)
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "db", "ref": Upstream.ref("db")}],
        output_dir=str(output_dir),
        poll_interval="0.2s",
        gcp={"backoff_initial": "100ms", "backoff_max": "300ms"},
    )
    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")

    upstream.set_faults({"AccessSecretVersion": {"corrupt_crc": 1.0}})
    upstream.add("db", new)
    agent.wait_until(
        lambda: (listeners.metric("secrets_agent_backend_errors_total", code="DATA_LOSS") or 0) >= 3,
        within=15,
        what="three corrupted payloads refused",
    )
    served = listeners.get("db")
    assert served.status_code == 200
    assert served.content == old.encode()
    assert served.headers["X-Secret-Version"] == "1"
    assert read_through_data(output_dir, "db") == old.encode()

    upstream.clear_faults()
    agent.wait_until(lambda: listeners.get("db").content == new.encode(), within=15, what="the sound payload")
    assert agent.stop() == 0
    assert_values_not_logged(agent, old, new)
