"""Drill: the app the agent should signal is not there (no pid file yet / no process matches the pattern).

Expected: the files are still swapped (the app reads them when it starts), the agent keeps running and
logs a warning per attempt that names the pid file or the pattern, gives up after ``notify.max_attempts``
with one error, counts the failures in its metrics, and signals the app at the next rotation once it exists.

Related: tests/notify/test_notify.py checks the signal notifier's own errors (missing or bad pid file, no
match).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from testing.apps import app_argv, wait_for_records_sync
from tests.drills.conftest import Listeners, read_through_data
from tests.e2e.conftest import Agents, Apps, Upstream, write_config

FAST_NOTIFY = {"debounce": "0", "max_attempts": 3}
FAST_BACKOFF = {"backoff_initial": "100ms", "backoff_max": "200ms"}


def test_a_missing_pid_file_is_warned_about_and_the_files_are_still_updated(
    agents: Agents, apps: Apps, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("api-key", "api-key-1")
    pid_file = tmp_path / "app.pid"  # the app has not started yet
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "api-key", "ref": Upstream.ref("api-key")}],
        output_dir=str(output_dir),
        poll_interval="0.3s",
        notify={"pid_file": str(pid_file), **FAST_NOTIFY},
        gcp=FAST_BACKOFF,
    )
    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")

    upstream.add("api-key", "api-key-2")
    agent.wait_until(
        lambda: read_through_data(output_dir, "api-key") == b"api-key-2", within=15, what="the new version"
    )
    warning = agent.wait_for_log("signal notifier failed (attempt 1 of 3)", within=15, severity="WARNING")
    assert str(pid_file) in warning, warning
    assert "does not exist" in warning, warning
    gave_up = agent.wait_for_log("signal notifier gave up after 3 attempts", within=15, severity="ERROR")
    assert str(pid_file) in gave_up, gave_up
    failures = listeners.metric("secrets_agent_reload_notifications_total", notifier="signal", result="error")
    assert failures == 3
    assert agent.alive()

    app_log = tmp_path / "app.log"
    apps.start(app_argv(app_log, directory=output_dir, files=["api-key"], snapshot=True, pid_file=pid_file))
    wait_for_records_sync(app_log, event="read")
    upstream.add("api-key", "api-key-3")
    [reload] = wait_for_records_sync(app_log, event="read", signal="SIGHUP", within=15)
    assert reload["values"] == {"api-key": "api-key-3"}
    assert agent.stop() == 0


def test_a_process_pattern_matching_nothing_is_warned_about_and_the_files_are_still_updated(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("api-key", "api-key-1")
    pattern = f"no-such-app-{uuid.uuid4().hex}"
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": "api-key", "ref": Upstream.ref("api-key")}],
        output_dir=str(output_dir),
        poll_interval="0.3s",
        notify={"process": pattern, **FAST_NOTIFY},
        gcp=FAST_BACKOFF,
    )
    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")

    upstream.add("api-key", "api-key-2")
    agent.wait_until(
        lambda: read_through_data(output_dir, "api-key") == b"api-key-2", within=15, what="the new version"
    )
    warning = agent.wait_for_log("signal notifier failed (attempt 1 of 3)", within=15, severity="WARNING")
    assert f"no process matches '{pattern}'" in warning, warning
    agent.wait_for_log("signal notifier gave up after 3 attempts", within=15, severity="ERROR")
    assert listeners.get("api-key").content == b"api-key-2"
    assert agent.alive()
    assert agent.stop() == 0
