"""``secrets-agent run`` end to end: the real sidecar against the emulator, telling a real app to reload.

Versions are added, disabled and broken through the official client and the emulator's admin API while
the agent runs; what the tests look at is what a user sees: the files, the app's reads, the emulator's
call counters, the agent's log and exit status.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from testing.apps import app_argv, read_log, wait_for_records_sync
from tests.e2e.conftest import (
    CANARY,
    AgentProcess,
    Agents,
    Apps,
    Upstream,
    data_target,
    read_file,
    write_config,
)

FAST_NOTIFY = {"SECRETS_AGENT_NOTIFY_DEBOUNCE": "0"}


def start_run(agents: Agents, *args: str | Path, env: Mapping[str, str] | None = None) -> AgentProcess:
    """``run`` in the background, returned once it has bootstrapped (and so handles its signals)."""
    agent = agents.start("run", *args, env={**FAST_NOTIFY, **(env or {})})
    agent.wait_for_log("run: serving", within=15)
    return agent


def specs(*names: str, pinned: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    return [{"name": n, "ref": Upstream.ref(n, (pinned or {}).get(n))} for n in names]


def file_is(directory: Path, name: str, value: str) -> bool:
    return read_file(directory, name) == value.encode()


def reads(log: Path) -> list[dict[str, object]]:
    return [r for r in read_log(log) if r["event"] == "read"]


def values_of(record: Mapping[str, object]) -> dict[str, str | None]:
    values = record["values"]
    assert isinstance(values, dict)
    return values


def has_read_pair(log: Path, n: int) -> bool:
    """Whether the app has read generation ``n`` of the pair (user-N and pass-N in one read)."""
    return any(
        values_of(r)["db-user"] == f"user-{n}" and values_of(r)["db-pass"] == f"pass-{n}" for r in reads(log)
    )


# --------------------------------------------------------------------------------------------------
# Rotation reaches the app
# --------------------------------------------------------------------------------------------------


def test_a_new_version_is_polled_swapped_and_signalled_to_the_app(
    agents: Agents, apps: Apps, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2-v1")
    config = write_config(
        tmp_path / "agent.yaml", specs("db-password"), output_dir=str(output_dir), poll_interval="0.3s"
    )
    app_log = tmp_path / "app.log"
    # The app is found by its command line, as in a pod with shareProcessNamespace: true.
    agent = start_run(agents, "-c", config, "--process", re.escape(str(app_log)))
    apps.start(app_argv(app_log, directory=output_dir, files=["db-password"], snapshot=True))
    [first] = wait_for_records_sync(app_log, event="read")
    assert values_of(first) == {"db-password": "hunter2-v1"}
    before = data_target(output_dir)

    added = time.monotonic()
    upstream.add("db-password", "hunter2-v2")
    [reload] = wait_for_records_sync(app_log, event="read", signal="SIGHUP", within=10)
    print(f"new version to app reloaded: {time.monotonic() - added:.2f}s (poll interval 0.3s)")

    assert values_of(reload) == {"db-password": "hunter2-v2"}
    assert file_is(output_dir, "db-password", "hunter2-v2")
    assert data_target(output_dir) != before  # a new snapshot was swapped in, not a file rewritten
    assert any("db-password@2" in m for m in agent.messages("INFO"))
    assert agent.alive()


def test_an_agent_killed_between_the_swap_and_the_signal_signals_the_app_when_it_is_back(
    agents: Agents, apps: Apps, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2-v1")
    config = write_config(
        tmp_path / "agent.yaml", specs("db-password"), output_dir=str(output_dir), poll_interval="0.2s"
    )
    app_log = tmp_path / "app.log"
    init = agents.run("init", "-c", config)
    assert init.returncode == 0, init.stderr
    apps.start(app_argv(app_log, directory=output_dir, files=["db-password"], snapshot=True))
    wait_for_records_sync(app_log, event="read")
    process = ["--process", re.escape(str(app_log))]
    # A long debounce holds the signal back after the swap: the window a crash can fall into.
    first = start_run(agents, "-c", config, *process, env={"SECRETS_AGENT_NOTIFY_DEBOUNCE": "30s"})
    assert not [m for m in first.messages() if "not told" in m]  # init recorded what the app started with

    upstream.add("db-password", "hunter2-v2")
    first.wait_until(lambda: file_is(output_dir, "db-password", "hunter2-v2"), within=10, what="the swap")
    first.send(signal.SIGKILL)
    first.wait(10)
    assert not [r for r in read_log(app_log) if r.get("signal")], "the app was signalled before the crash"

    second = start_run(agents, "-c", config, *process)
    [reload] = wait_for_records_sync(app_log, event="read", signal="SIGHUP", within=15)
    assert values_of(reload) == {"db-password": "hunter2-v2"}
    second.wait_for_log("the app was not told about the secrets on disk", severity="INFO")


def test_a_pair_rotated_twenty_times_never_reaches_the_app_mixed(
    agents: Agents, apps: Apps, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """A username and a password in two secrets, rotated together twenty times; the app re-reads both on
    every SIGHUP and must never see user-N with pass-M, N != M.

    Why the agent is told to refresh (SIGHUP) instead of polling here: the pair lives in two secrets
    that are updated upstream one after the other. A poll round that falls between the two updates
    legitimately sees user-N with pass-(N-1): the agent cannot know that two secrets belong together,
    and Secret Manager has no transaction across secrets (the advice for a pair that must never mix is
    one secret holding both). So the agent is asked to look only once both versions are upstream, which
    makes "never mixed" a property of the agent alone: both new values must be fetched in one round,
    written as one snapshot (files swapped together by the ``..data`` rename) and the app signalled after
    the swap. An agent that committed secrets one by one, or signalled before the swap, or a torn file set
    would show up as a mixed read. (The polled case, where mixed pairs are legitimate but every read must
    still be one whole snapshot, is the next test.)
    """
    upstream.create("db-user", "user-0")
    upstream.create("db-pass", "pass-0")
    pid_file = tmp_path / "app.pid"
    config = write_config(
        tmp_path / "agent.yaml",
        specs("db-user", "db-pass"),
        output_dir=str(output_dir),
        poll_interval="1h",  # only SIGHUP triggers a check
        # Each SIGHUP comes a few hundred ms after the last round; at the default 1 s spacing of forced
        # rounds every one of the twenty would wait for it (tests/e2e/test_refresh_storms.py covers that).
        refresh_min_interval="100ms",
        notify={"pid_file": str(pid_file)},
    )
    agent = start_run(agents, "-c", config)
    app_log = tmp_path / "app.log"
    apps.start(
        app_argv(
            app_log, directory=output_dir, files=["db-user", "db-pass"], snapshot=True, pid_file=pid_file
        )
    )
    wait_for_records_sync(app_log, event="read")

    started = time.monotonic()
    for n in range(1, 21):
        upstream.add("db-user", f"user-{n}")
        upstream.add("db-pass", f"pass-{n}")
        agent.send(signal.SIGHUP)
        agent.wait_until(partial(has_read_pair, app_log, n), within=10, what=f"the app to read rotation {n}")
    print(f"20 pair rotations, each seen by the app: {time.monotonic() - started:.2f}s")

    seen = [(values_of(r)["db-user"], values_of(r)["db-pass"], r["snapshot"]) for r in reads(app_log)]
    generations = []
    for user, password, snapshot in seen:
        assert snapshot is not None, "the app read outside a snapshot"
        assert user is not None
        assert password is not None
        assert user.removeprefix("user-") == password.removeprefix("pass-"), f"mixed pair: {user}, {password}"
        generations.append(int(user.removeprefix("user-")))
    assert generations == sorted(generations), f"the app went back in time: {generations}"
    assert generations[-1] == 20
    assert len(seen) >= 21


def test_polled_rotations_give_the_app_only_whole_snapshots(
    agents: Agents, apps: Apps, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """The same pair, now polled every 0.1 s while it rotates: a read may pair user-N with pass-(N-1) (see
    the previous test), but each read must be one whole snapshot: the two files and the snapshot's
    manifest, read through one ``..data`` resolution, agree on the versions. A torn set (one file from
    the next swap) or a manifest that lies about what was written fails this."""
    upstream.create("db-user", "user-0")
    upstream.create("db-pass", "pass-0")
    config = write_config(
        tmp_path / "agent.yaml",
        specs("db-user", "db-pass"),
        output_dir=str(output_dir),
        poll_interval="0.1s",
        notify={"process": re.escape(str(tmp_path / "app.log"))},
    )
    agent = start_run(agents, "-c", config)
    app_log = tmp_path / "app.log"
    files = ["db-user", "db-pass", "..manifest.json"]
    apps.start(app_argv(app_log, directory=output_dir, files=files, snapshot=True))
    wait_for_records_sync(app_log, event="read")

    started = time.monotonic()
    for n in range(1, 21):
        upstream.add("db-user", f"user-{n}")
        upstream.add("db-pass", f"pass-{n}")
        agent.wait_until(
            partial(has_read_pair, app_log, n), within=10, what=f"the app to read generation {n}"
        )
    print(f"20 polled pair rotations, each seen by the app: {time.monotonic() - started:.2f}s")

    for record in reads(app_log):
        values = values_of(record)
        manifest = json.loads(values["..manifest.json"] or "{}")["secrets"]
        for name, prefix in (("db-user", "user-"), ("db-pass", "pass-")):
            version = int(manifest[name]["version"])
            # Version 1 holds generation 0, version N+1 generation N.
            assert values[name] == f"{prefix}{version - 1}", (name, values[name], manifest[name], record)


# --------------------------------------------------------------------------------------------------
# What is polled, and how
# --------------------------------------------------------------------------------------------------


def test_pinned_versions_are_never_polled_while_latest_is(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """Counters are per method and status, not per secret, so the pinned version is made to answer
    differently from everything else: it is disabled after the bootstrap, and any access to it would be
    counted as FAILED_PRECONDITION. The polled ``latest`` secrets are the clock: ten successful polls."""
    upstream.create("db", "db-v1")
    upstream.create("api-key", "api-v1")
    config = write_config(
        tmp_path / "agent.yaml",
        specs("db", "api-key", pinned={"db": "1"}),
        output_dir=str(output_dir),
        poll_interval="0.1s",
    )
    agent = start_run(agents, "-c", config)
    upstream.add("db", "db-v2")  # a newer version exists; the pinned one must not follow it
    upstream.disable("db", "1")
    upstream.reset_counters()

    agent.wait_until(
        lambda: upstream.calls("AccessSecretVersion", "OK") >= 10, within=10, what="ten polls of latest"
    )

    assert upstream.counters() == {"AccessSecretVersion": {"OK": upstream.calls("AccessSecretVersion", "OK")}}
    assert file_is(output_dir, "db", "db-v1")
    assert not [m for m in agent.messages() if "checking db failed" in m]


def test_metadata_strategy_reads_versions_and_accesses_only_when_one_moved(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-v1")
    config = write_config(
        tmp_path / "agent.yaml",
        specs("db"),
        output_dir=str(output_dir),
        poll_interval="0.1s",
        gcp={"strategy": "metadata"},
    )
    agent = start_run(agents, "-c", config)
    upstream.reset_counters()

    agent.wait_until(
        lambda: upstream.calls("GetSecretVersion", "OK") >= 6, within=10, what="3 metadata polls"
    )
    assert "AccessSecretVersion" not in upstream.counters()

    upstream.add("db", "db-v2")
    agent.wait_until(lambda: file_is(output_dir, "db", "db-v2"), within=10, what="db-v2 on disk")
    assert upstream.counters()["AccessSecretVersion"] == {"OK": 1}  # the one secret that moved, once

    polled = upstream.calls("GetSecretVersion")
    agent.wait_until(lambda: upstream.calls("GetSecretVersion") >= polled + 4, within=10, what="2 more polls")
    assert upstream.counters()["AccessSecretVersion"] == {"OK": 1}


# --------------------------------------------------------------------------------------------------
# Last-known-good
# --------------------------------------------------------------------------------------------------


def assert_values_not_logged(agent: AgentProcess, values: Sequence[str]) -> None:
    output = agent.stdout() + agent.stderr()
    for value in values:
        assert value not in output, "a secret value was logged"


def test_a_disabled_newest_version_keeps_the_old_value_until_it_is_enabled(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    old, new = "db-secret-value-v1-3f9a", "db-secret-value-v2-77c1"
    upstream.create("db", old)
    config = write_config(
        tmp_path / "agent.yaml", specs("db"), output_dir=str(output_dir), poll_interval="1h"
    )
    agent = start_run(agents, "-c", config)
    upstream.add("db", new)
    upstream.disable("db", "2")  # latest is now a disabled version

    agent.send(signal.SIGHUP)
    warning = agent.wait_for_log("checking db failed", severity="WARNING")

    assert "FAILED_PRECONDITION" in warning, warning
    assert "keeping the last known good value" in warning, warning
    assert file_is(output_dir, "db", old)
    assert agent.alive()

    upstream.enable("db", "2")
    agent.send(signal.SIGHUP)
    agent.wait_until(lambda: file_is(output_dir, "db", new), within=10, what="the enabled version on disk")
    assert_values_not_logged(agent, [old, new])


def test_crc_corruption_keeps_the_old_value_until_the_payloads_are_sound_again(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    old, new = "db-secret-value-v1-9e02", "db-secret-value-v2-41bd"
    upstream.create("db", old)
    config = write_config(
        tmp_path / "agent.yaml", specs("db"), output_dir=str(output_dir), poll_interval="0.1s"
    )
    agent = start_run(agents, "-c", config)
    upstream.set_faults({"AccessSecretVersion": {"corrupt_crc": 1.0}})
    upstream.reset_counters()
    upstream.add("db", new)

    def corrupted_checks() -> list[str]:
        return [m for m in agent.messages("WARNING") if "checking db failed" in m and "DATA_LOSS" in m]

    agent.wait_until(
        lambda: upstream.calls("AccessSecretVersion") >= 5, within=10, what="five corrupted payloads refused"
    )
    assert file_is(output_dir, "db", old)
    assert agent.alive()
    # One warning for the streak, not one per check: an outage must not bury the rest of the log.
    assert len(corrupted_checks()) == 1

    upstream.clear_faults()
    agent.wait_until(lambda: file_is(output_dir, "db", new), within=10, what="the new version once sound")
    agent.wait_for_log("checking db works again after", severity="INFO")
    assert_values_not_logged(agent, [old, new])


# --------------------------------------------------------------------------------------------------
# Signals to the agent, and a backend that is down at start
# --------------------------------------------------------------------------------------------------


def test_sighup_refreshes_now_and_sigterm_stops_within_the_grace_period(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-v1")
    config = write_config(
        tmp_path / "agent.yaml", specs("db"), output_dir=str(output_dir), poll_interval="1h"
    )
    agent = start_run(agents, "-c", config, env={"SECRETS_AGENT_SHUTDOWN_GRACE": "2s"})
    upstream.add("db", "db-v2")

    agent.send(signal.SIGHUP)  # with an hour between polls, only this can make the agent look now
    agent.wait_until(lambda: file_is(output_dir, "db", "db-v2"), within=10, what="db-v2 after SIGHUP")

    asked = time.monotonic()
    code = agent.stop(within=2.0 + 2.0)
    print(f"SIGTERM to exit: {time.monotonic() - asked:.2f}s")
    assert code == 0
    assert any("run: stopped" in m for m in agent.messages("INFO"))


def test_sigterm_stops_an_agent_still_retrying_its_bootstrap(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-v1")
    upstream.set_faults({"AccessSecretVersion": {"unavailable": 1.0}})
    config = write_config(tmp_path / "agent.yaml", specs("db"), output_dir=str(output_dir))
    agent = agents.start("run", "-c", config, "--timeout", "5m", env={"SECRETS_AGENT_SHUTDOWN_GRACE": "2s"})
    agent.wait_for_log("retry", severity="WARNING")

    assert agent.stop(within=2.0 + 2.0) == 0


def test_a_backend_down_at_start_is_retried_until_it_is_back(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-v1")
    upstream.set_faults({"AccessSecretVersion": {"unavailable": 1.0}})
    config = write_config(
        tmp_path / "agent.yaml", specs("db"), output_dir=str(output_dir), poll_interval="0.2s"
    )

    agent = start_run(agents, "-c", config, "--timeout", "1s")

    assert any("serving 0 of 2" in m for m in agent.messages("INFO"))
    assert read_file(output_dir, "db") is None
    assert read_file(output_dir, "canary") is None
    failing = upstream.calls("AccessSecretVersion", "UNAVAILABLE")
    agent.wait_until(
        lambda: upstream.calls("AccessSecretVersion", "UNAVAILABLE") >= failing + 4,
        within=10,
        what="the agent to keep retrying after its bootstrap timeout",
    )

    upstream.clear_faults()
    agent.wait_until(
        lambda: file_is(output_dir, "db", "db-v1"), within=10, what="db once the backend is back"
    )
    assert file_is(output_dir, "canary", CANARY)
    assert agent.stop() == 0
