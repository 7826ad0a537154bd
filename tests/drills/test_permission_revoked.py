"""Drill: the agent's access to its secrets is revoked while it runs (PERMISSION_DENIED on every access).

Expected: the last known good value stays in the files and on the endpoint, the agent logs a warning that
names the secret and the status, counts the error by code in its metrics, and picks the new version up by
itself once access is granted again. (The emulator has no IAM: an injected PERMISSION_DENIED fault is how
access is revoked; it applies to every AccessSecretVersion call.)

Related: tests/e2e/test_init.py::test_init_names_a_forbidden_secret_with_a_permission_hint (init).
"""

from __future__ import annotations

from pathlib import Path

from tests.drills.conftest import Listeners, assert_values_not_logged, read_through_data
from tests.e2e.conftest import Agents, Upstream, write_config


def test_a_revoked_permission_keeps_the_last_known_good_value_and_says_so(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    old, new = "payroll-key-granted-51aa", "payroll-key-rotated-9b07"
    upstream.create("payroll", old)
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "payroll", "ref": Upstream.ref("payroll")}],
        output_dir=str(output_dir),
        poll_interval="0.3s",
        gcp={"backoff_initial": "100ms", "backoff_max": "500ms"},
    )
    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")

    upstream.set_faults({"AccessSecretVersion": {"fail_next": 100_000, "fail_code": "PERMISSION_DENIED"}})
    upstream.add("payroll", new)  # a rotation the agent is no longer allowed to read
    warning = agent.wait_for_log("checking payroll failed", within=15, severity="WARNING")

    assert "PERMISSION_DENIED" in warning, warning
    assert "permanent" in warning, warning
    assert Upstream.ref("payroll", "latest") in warning, warning
    assert "keeping the last known good value" in warning, warning
    assert (listeners.metric("secrets_agent_backend_errors_total", code="PERMISSION_DENIED") or 0) >= 1
    assert read_through_data(output_dir, "payroll") == old.encode()
    served = listeners.get("payroll")
    assert served.status_code == 200
    assert served.content == old.encode()
    assert agent.alive()

    upstream.clear_faults()  # access granted again
    agent.wait_until(
        lambda: read_through_data(output_dir, "payroll") == new.encode(), within=15, what="the new version"
    )
    # The files are swapped before the endpoint's store is (it never runs ahead of them): wait for it too.
    agent.wait_until(
        lambda: listeners.get("payroll").content == new.encode(), within=5, what="the endpoint's new version"
    )
    assert agent.stop() == 0
    assert_values_not_logged(agent, old, new)
