"""Drill: the agent's output volume (a tiny tmpfs of its own) fills up while a rotation comes in.

Expected: the write fails cleanly (ENOSPC, logged with the path, never a value), the old snapshot stays
whole on disk and the endpoint keeps serving the same old value (it never runs ahead of the files), the app
is not told to reload; once space is freed the agent writes the new snapshot by itself, leaves no half
snapshot behind, and signals the app.

Related: tests/sinks/test_tmpfs_full.py checks the snapshot writer alone on a full tmpfs.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from testing.apps import app_argv, find_records, wait_for_records_sync
from tests.drills.conftest import Listeners, assert_values_not_logged, read_through_data
from tests.e2e.conftest import Agents, Apps, Upstream, write_config
from tests.sinks.conftest import MountTmpfs
from tests.sinks.helpers import snapshot_dirs


def fill(volume: Path) -> Path:
    """A ballast file that takes every free byte of ``volume``."""
    ballast = volume / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return ballast
    finally:
        os.close(fd)


def test_a_full_volume_keeps_the_old_snapshot_and_the_write_succeeds_once_space_is_freed(
    mount_tmpfs: MountTmpfs, agents: Agents, apps: Apps, upstream: Upstream, tmp_path: Path
) -> None:
    old, new = "db-password-old-7e1a", "db-password-new-c33f"
    upstream.create("db-user", "db-user-1")
    upstream.create("db-password", old)
    volume = mount_tmpfs("256k")
    output_dir = volume / "secrets"
    pid_file = tmp_path / "app.pid"
    config = write_config(
        tmp_path / "agent.yaml",
        [{"name": n, "ref": Upstream.ref(n)} for n in ("db-user", "db-password")],
        output_dir=str(output_dir),
        env_file="app.env",
        poll_interval="0.3s",
        notify={"pid_file": str(pid_file), "debounce": "0"},
        gcp={"backoff_initial": "100ms", "backoff_max": "500ms"},
    )
    agent = agents.start("run", "-c", config)
    listeners = Listeners(agent, output_dir)
    agent.wait_until(listeners.ready, within=20, what="ready after the bootstrap")
    app_log = tmp_path / "app.log"
    apps.start(
        app_argv(app_log, directory=output_dir, files=["db-password"], snapshot=True, pid_file=pid_file)
    )
    wait_for_records_sync(app_log, event="read")
    before = snapshot_dirs(output_dir)

    ballast = fill(volume)
    upstream.add("db-password", new)
    error = agent.wait_for_log("writing the new snapshot failed", within=15, severity="ERROR")

    assert "ENOSPC" in error, error
    assert str(output_dir) in error, error
    assert "keeping the previous one" in error, error
    assert read_through_data(output_dir, "db-password") == old.encode()
    assert read_through_data(output_dir, "db-user") == b"db-user-1"
    assert b"DB_PASSWORD='" + old.encode() + b"'" in read_through_data(output_dir, "app.env")
    assert snapshot_dirs(output_dir) == before  # the half-written snapshot was removed
    served = listeners.get("db-password")
    assert served.status_code == 200
    assert served.content == old.encode()  # the endpoint does not run ahead of the files
    assert find_records(app_log, event="read", signal="SIGHUP") == []
    assert agent.alive()

    ballast.unlink()
    [reload] = wait_for_records_sync(app_log, event="read", signal="SIGHUP", within=15)
    assert reload["values"] == {"db-password": new}
    assert read_through_data(output_dir, "db-password") == new.encode()
    assert listeners.get("db-password").content == new.encode()
    assert len(snapshot_dirs(output_dir)) == 1
    assert agent.stop() == 0
    assert_values_not_logged(agent, old, new)
