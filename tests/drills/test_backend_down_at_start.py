"""Drill: Secret Manager is down when the agent starts (nothing listens on its port: connection refused).

``init`` must fail within its deadline with one line per secret naming the secret, its reference, the
status, the address it could not reach and what to do; ``run`` must stay up, not ready, retrying, and
become ready on its own once the backend is started on the same port.

Related, not repeated here: tests/e2e/test_run.py::test_a_backend_down_at_start_is_retried_until_it_is_back
and tests/e2e/test_init.py::test_init_timeout_bounds_a_backend_that_is_down, where the backend answers
UNAVAILABLE (an injected fault) instead of being absent.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.drills.conftest import Backend, Listeners, read_through_data, seed_backend
from tests.e2e.conftest import Agents, Upstream, write_config


def test_init_exits_1_naming_each_secret_the_backend_and_what_to_do(
    backend: Backend, backend_agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "agent.yaml", [{"name": "db", "ref": Upstream.ref("db")}], output_dir=str(output_dir)
    )

    result = backend_agents.run("init", "-c", config, "--timeout", "3s", within=30)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [m for m in result.messages("ERROR") if m.startswith("required secret failed: db <- ")]
    assert Upstream.ref("db", "latest") in line, line
    assert ": UNAVAILABLE: " in line, line
    assert backend.grpc_target in line, line  # where it looked, so the operator can check that address
    assert "hint: Secret Manager is unreachable" in line, line
    assert any("init failed: 2 of 2 required secret(s)" in m for m in result.messages("ERROR"))
    assert result.seconds < 3 + 15  # the deadline holds (process start-up included, on a loaded machine)
    assert not os.path.lexists(output_dir / "db")


def test_run_keeps_retrying_and_becomes_ready_when_the_backend_starts(
    backend: Backend, backend_agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    seed_backend(backend, {"db": "db-value-first"})
    backend.stop()  # the secrets stay in its data file; nothing listens on its port now
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "db", "ref": Upstream.ref("db")}],
        output_dir=str(output_dir),
        poll_interval="0.5s",
        gcp={"backoff_initial": "100ms", "backoff_max": "1s"},
    )

    agent = backend_agents.start("run", "-c", config, "--timeout", "1s")
    agent.wait_for_log("run: serving 0 of 2", within=20)
    listeners = Listeners(agent, output_dir)
    reasons = listeners.not_ready_reasons()
    assert any("db" in reason for reason in reasons), reasons
    assert listeners.get("db").status_code == 503  # not fetched yet: "retry later", never a made-up value
    assert not os.path.lexists(output_dir / "db")
    assert agent.alive()

    backend.start()  # same port, same secrets
    agent.wait_until(listeners.ready, within=20, what="ready once the backend is up")
    assert read_through_data(output_dir, "db") == b"db-value-first"
    response = listeners.get("db")
    assert response.status_code == 200
    assert response.content == b"db-value-first"
    assert agent.stop() == 0
