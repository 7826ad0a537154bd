"""``exec`` and ``exec --watch`` with real processes: environment, exit status, signals, rotation, reaping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Snapshot, crc32c
from agent.errors import AgentError
from agent.execmode.launch import EXIT_NOT_FOUND, ExecError, child_environment
from agent.execmode.watch import FORWARDED_SIGNALS, WatchedChild
from testing.apps import (
    SUPERVISE,
    app_argv,
    find_records,
    process_gone,
    read_log,
    wait_for_records,
    wait_for_records_sync,
    wait_until,
    wait_until_sync,
)

CANARY = "canary-7f3a9c-do-not-log"
# pytest-timeout uses SIGALRM; supervisors running inside the test process leave it alone so that a hung
# test still times out. The default (forward everything) is tested in a separate supervisor process.
IN_PROCESS_FORWARD = FORWARDED_SIGNALS - {int(signal.SIGALRM)}


def spec(name: str, *, env: str = "", required: bool = True) -> SecretSpec:
    return SecretSpec(
        name=name,
        ref=parse_ref(f"projects/my-project/secrets/{name.replace('.', '-')}"),
        env=env,
        required=required,
    )


def fetched(name: str, data: bytes, version: str = "1") -> Fetched:
    return Fetched(name=name, version=version, data=data, crc32c=crc32c(data))


def snapshot(**values: bytes) -> Snapshot:
    return Snapshot({name: fetched(name, data) for name, data in values.items()})


# --------------------------------------------------------------------------------------------------
# child_environment (pure)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "values", "specs", "expected"),
    [
        pytest.param(
            {"PATH": "/bin"}, {"db": b"s3cret"}, [spec("db")], {"PATH": "/bin", "DB": "s3cret"}, id="plain"
        ),
        pytest.param(
            {},
            {"db.pass-word": b"x"},
            [spec("db.pass-word")],
            {"DB_PASS_WORD": "x"},
            id="default-env-name-from-local-name",
        ),
        pytest.param(
            {}, {"db": b"x"}, [spec("db", env="PGPASSWORD")], {"PGPASSWORD": "x"}, id="explicit-env"
        ),
        pytest.param(
            {"DB": "from-base"}, {"db": b"from-secret"}, [spec("db")], {"DB": "from-secret"}, id="secret-wins"
        ),
        pytest.param(
            {},
            {"cert": 'line 1\nline 2 "quoted" $HOME \\ # é 🔑'.encode()},
            [spec("cert")],
            {"CERT": 'line 1\nline 2 "quoted" $HOME \\ # é 🔑'},
            id="any-utf8-text-verbatim",
        ),
        pytest.param({}, {"db": b""}, [spec("db")], {"DB": ""}, id="empty-value"),
        pytest.param(
            {"A": "1"}, {}, [spec("opt", required=False)], {"A": "1"}, id="optional-missing-left-out"
        ),
        pytest.param(
            {}, {"db": b"x", "extra": b"y"}, [spec("db")], {"DB": "x"}, id="only-configured-secrets"
        ),
    ],
)
def test_child_environment(
    base: dict[str, str], values: dict[str, bytes], specs: list[SecretSpec], expected: dict[str, str]
) -> None:
    assert child_environment(base, snapshot(**values), specs) == expected


def test_child_environment_does_not_modify_base() -> None:
    base = {"PATH": "/bin"}
    child_environment(base, snapshot(db=b"x"), [spec("db")])
    assert base == {"PATH": "/bin"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(CANARY.encode() + b"\xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param(CANARY.encode() + b"\0tail", "NUL", id="nul"),
    ],
)
def test_child_environment_refuses_values_an_environment_cannot_carry(data: bytes, reason: str) -> None:
    with pytest.raises(AgentError) as caught:
        child_environment({}, snapshot(blob=data), [spec("blob", env="BLOB")])
    message = str(caught.value)
    assert "blob (env BLOB)" in message
    assert reason in message
    assert CANARY not in message


def test_child_environment_lists_every_problem_at_once() -> None:
    specs = [spec("bin"), spec("missing"), spec("ok"), spec("nul")]
    with pytest.raises(AgentError) as caught:
        child_environment({}, snapshot(bin=b"\x80", ok=b"fine", nul=b"a\0b"), specs)
    lines = str(caught.value).splitlines()
    assert [line.split(" ")[2] for line in lines[1:]] == ["bin", "missing", "nul"]
    assert "no value was fetched" in lines[2]


# --------------------------------------------------------------------------------------------------
# exec_replace: the agent process becomes the app
# --------------------------------------------------------------------------------------------------


def run_exec_replace(
    argv: list[str], env: Mapping[str, str], prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run, in a fresh Python process, ``exec_replace(argv, env)`` after printing that process's pid."""
    script = textwrap.dedent(
        f"""
        import json, os, signal, sys
        from agent.execmode.launch import ExecError, exec_replace
        {prelude}
        print(json.dumps({{"pid": os.getpid()}}), flush=True)
        try:
            exec_replace(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
        except ExecError as error:
            print(f"secrets-agent: {{error}}", file=sys.stderr)
            sys.exit(error.exit_status)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, json.dumps(argv), json.dumps(dict(env))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_exec_replace_keeps_the_pid_and_passes_the_environment(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    env = {**os.environ, "DB_PASSWORD": CANARY, "MULTI": "a\nb"}
    done = run_exec_replace(app_argv(log, env=["DB_PASSWORD", "MULTI", "UNSET"], exit_with=0), env)
    assert done.returncode == 0, done.stderr
    (start,) = find_records(log, event="start")
    assert start["pid"] == json.loads(done.stdout)["pid"]  # same process: no agent left behind
    assert start["env"] == {"DB_PASSWORD": CANARY, "MULTI": "a\nb", "UNSET": None}


def test_exec_replace_passes_the_exit_status_through(tmp_path: Path) -> None:
    done = run_exec_replace(app_argv(tmp_path / "app.log", exit_with=3), dict(os.environ))
    assert done.returncode == 3


def test_exec_replace_searches_the_childs_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "my-app"
    program.write_text('#!/bin/sh\necho "greeting=$GREETING"\n')
    program.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GREETING": "hello"}
    done = run_exec_replace(["my-app"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "greeting=hello"


def test_exec_replace_restores_default_signal_handling(tmp_path: Path) -> None:
    # Python ignores SIGPIPE; an app inheriting that never dies of a closed pipe. A blocked signal mask
    # would survive exec as well.
    done = run_exec_replace(
        ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"],
        dict(os.environ),
        prelude="signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGTERM])",
    )
    assert done.returncode == 0, done.stderr
    masks = dict(line.split(":\t") for line in done.stdout.splitlines()[1:])
    assert not int(masks["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1))
    assert int(masks["SigBlk"], 16) == 0


def test_exec_replace_command_not_found_is_127_with_a_clear_message(tmp_path: Path) -> None:
    done = run_exec_replace(["no-such-command-xyz"], {"PATH": str(tmp_path)})
    assert done.returncode == EXIT_NOT_FOUND
    assert "secrets-agent: command 'no-such-command-xyz' not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_exec_replace_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    done = run_exec_replace([str(script)], dict(os.environ))
    assert done.returncode == 126
    assert "cannot execute" in done.stderr


# --------------------------------------------------------------------------------------------------
# WatchedChild inside the test's event loop
# --------------------------------------------------------------------------------------------------


def watched(argv: list[str], env: Mapping[str, str], **kwargs: object) -> WatchedChild:
    return WatchedChild(argv, lambda: dict(env), forward=IN_PROCESS_FORWARD, **kwargs)  # type: ignore[arg-type]


def base_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


async def test_child_sees_the_variables_and_its_exit_status_passes_through(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(
        app_argv(log, env=["DB_PASSWORD"], exit_with=0), base_env(DB_PASSWORD=CANARY)
    ) as child:
        assert await child.wait() == 0
    (start,) = find_records(log, event="start")
    assert start["env"] == {"DB_PASSWORD": CANARY}


@pytest.mark.parametrize("status", [0, 3, 255])
async def test_exit_status_passes_through(tmp_path: Path, status: int) -> None:
    async with watched(app_argv(tmp_path / "app.log", exit_with=status), base_env()) as child:
        assert await child.wait() == status


async def test_death_by_signal_is_128_plus_n(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(app_argv(log), base_env()) as child:
        (start,) = await wait_for_records(log, event="start")
        os.kill(int(start["pid"]), signal.SIGTERM)  # type: ignore[call-overload]
        assert await child.wait() == 128 + signal.SIGTERM


async def test_child_runs_in_its_own_session(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(app_argv(log), base_env()) as child:
        (start,) = await wait_for_records(log, event="start")
        assert start["ppid"] == os.getpid()
        assert start["pid"] == start["pgid"] == start["sid"] == child.pid
        child.forward(signal.SIGTERM)
        assert await child.wait() == 128 + signal.SIGTERM


async def test_forward_reaches_the_child(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(app_argv(log), base_env()) as child:
        await wait_for_records(log, event="start")
        child.forward(signal.SIGUSR1)
        await wait_for_records(log, event="signal", signal="SIGUSR1")
        child.forward(signal.SIGINT)
        assert await child.wait() == 128 + signal.SIGINT
        assert child.stopping


async def test_rotation_restarts_the_child_with_the_new_environment(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(app_argv(log, env=["TOKEN"]), base_env(TOKEN="v1"), grace=10.0) as child:
        (first,) = await wait_for_records(log, event="start")
        await child.rotated(base_env(TOKEN="v2"))
        starts = await wait_for_records(log, 2, event="start")
        assert starts[1]["pid"] == child.pid != first["pid"]
        assert [s["env"] for s in starts] == [{"TOKEN": "v1"}, {"TOKEN": "v2"}]
        # The old process was asked politely, then reaped: not left behind, not a zombie.
        assert find_records(log, event="signal", pid=first["pid"]) == [
            {"event": "signal", "pid": first["pid"], "signal": "SIGTERM"}
        ]
        assert process_gone(first["pid"])
        assert child.restarts == 1
        assert child.running
        # The supervisor's own exit status is still the new child's.
        child.forward(signal.SIGTERM)
        assert await child.wait() == 128 + signal.SIGTERM
    assert process_gone(starts[1]["pid"])


async def test_rotation_kills_a_child_that_ignores_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(
        app_argv(log, env=["TOKEN"], on_term="ignore"), base_env(TOKEN="v1"), grace=0.3
    ) as child:
        (first,) = await wait_for_records(log, event="start")
        await child.rotated(base_env(TOKEN="v2"))
        starts = await wait_for_records(log, 2, event="start")
        assert starts[1]["env"] == {"TOKEN": "v2"}
        assert find_records(log, event="signal", pid=first["pid"], signal="SIGTERM")
        assert process_gone(first["pid"])
        assert await child.stop() == 128 + signal.SIGKILL  # stop() uses the same grace, then SIGKILL


async def test_rotation_with_reload_signal_keeps_the_process(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "token").write_text("v1")
    argv = app_argv(log, directory=secrets_dir, files=["token"], env=["TOKEN"])
    async with watched(argv, base_env(TOKEN="v1"), reload_signal=signal.SIGHUP) as child:
        (start,) = await wait_for_records(log, event="start")
        (secrets_dir / "token").write_text("v2")
        await child.rotated(base_env(TOKEN="v2"))
        (reread,) = await wait_for_records(log, event="read", signal="SIGHUP")
        assert reread["pid"] == start["pid"] == child.pid
        assert reread["values"] == {"token": "v2"}
        assert reread["reads"] == 2
        assert child.restarts == 0
        assert len(find_records(log, event="start")) == 1
        child.forward(signal.SIGTERM)
        assert await child.wait() == 128 + signal.SIGTERM


async def test_no_restart_once_stopping(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with watched(app_argv(log, on_term="ignore"), base_env(), grace=0.2) as child:
        await wait_for_records(log, event="start")
        child.forward(signal.SIGTERM)  # ignored by this app, but the supervisor is now stopping
        await wait_for_records(log, event="signal", signal="SIGTERM")
        await child.rotated(base_env(TOKEN="v2"))
        assert child.restarts == 0
        assert len(find_records(log, event="start")) == 1
    # Leaving the block stopped it (SIGTERM ignored, then SIGKILL).
    assert await child.wait() == 128 + signal.SIGKILL


async def test_restart_failing_to_find_the_command_ends_with_127(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "my-app"
    program.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    program.chmod(0o755)
    log = tmp_path / "app.log"
    argv = ["my-app", *app_argv(log)[1:]]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    async with watched(argv, env) as child:
        await wait_for_records(log, event="start")
        await child.rotated({"PATH": "/nonexistent"})
        assert await child.wait() == EXIT_NOT_FOUND
        assert not child.running


async def test_start_failure_raises_and_restores_signal_handlers() -> None:
    before = {
        sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
    }
    with pytest.raises(ExecError) as caught:
        async with watched(["no-such-command-xyz"], {"PATH": "/nonexistent"}):
            pass
    assert caught.value.exit_status == EXIT_NOT_FOUND
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_leaving_the_block_stops_the_child_and_restores_handlers(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    watched_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)
    before = {sig: signal.getsignal(sig) for sig in watched_signals}
    async with watched(app_argv(log), base_env()) as child:
        (start,) = await wait_for_records(log, event="start")
        assert {sig: signal.getsignal(sig) for sig in before} != before
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert find_records(log, event="signal", signal="SIGTERM")
    assert process_gone(start["pid"])
    assert await child.wait() == 128 + signal.SIGTERM


# --------------------------------------------------------------------------------------------------
# A supervisor process of its own: real signals to it, reaping as a subreaper
# --------------------------------------------------------------------------------------------------


class Supervisor:
    def __init__(self, tmp_path: Path, command: list[str], *extra: str) -> None:
        self.status_file = tmp_path / "supervisor.json"
        self.process = subprocess.Popen(
            [sys.executable, str(SUPERVISE), "--status", str(self.status_file), *extra, "--", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ready(self) -> dict[str, object]:
        wait_until_sync(
            lambda: self.status_file.exists() or self.process.poll() is not None, what="supervisor"
        )
        assert self.status_file.exists(), self.process.communicate(timeout=10)
        info: dict[str, object] = json.loads(self.status_file.read_text())
        return info

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)  # also closes the pipes of a supervisor that ended on its own


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for supervisor in started:
        supervisor.kill()


def test_every_signal_sent_to_the_supervisor_reaches_the_child(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    log = tmp_path / "app.log"
    supervisor = Supervisor(tmp_path, app_argv(log))
    supervisors.append(supervisor)
    info = supervisor.ready()
    (start,) = wait_for_records_sync(log, event="start")
    assert start["pid"] == info["child"]
    sent = {
        signal.SIGHUP: "SIGHUP",
        signal.SIGUSR1: "SIGUSR1",
        signal.SIGUSR2: "SIGUSR2",
        signal.SIGWINCH: "SIGWINCH",
        signal.SIGALRM: "SIGALRM",
        signal.SIGCONT: "SIGCONT",
        signal.SIGURG: "SIGURG",
        signal.SIGRTMIN + 2: f"SIGRT{signal.SIGRTMIN + 2}",
    }
    for number, name in sent.items():
        # One at a time: pending standard signals of one kind coalesce, in the child as anywhere.
        before = len(find_records(log, event="signal"))
        supervisor.send(number)
        records = wait_for_records_sync(log, before + 1, event="signal")
        assert records[before]["signal"] == name
    supervisor.send(signal.SIGTERM)
    status, _, err = supervisor.finish()
    assert status == 128 + signal.SIGTERM, err
    assert find_records(log, event="signal")[-1]["signal"] == "SIGTERM"
    assert process_gone(start["pid"])


@pytest.mark.parametrize("exit_with", [0, 3])
def test_supervisor_exits_with_the_childs_status(
    tmp_path: Path, supervisors: list[Supervisor], exit_with: int
) -> None:
    supervisor = Supervisor(tmp_path, app_argv(tmp_path / "app.log", exit_with=exit_with))
    supervisors.append(supervisor)
    status, _, err = supervisor.finish()
    assert status == exit_with, err


def test_supervisor_reaps_orphans_as_a_subreaper(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    log = tmp_path / "app.log"
    orphan_file = tmp_path / "orphan.json"
    supervisor = Supervisor(tmp_path, app_argv(log, orphan=orphan_file), "--subreaper")
    supervisors.append(supervisor)
    info = supervisor.ready()
    assert info["reaper"] is True
    wait_until_sync(orphan_file.exists, what="the orphan's record")
    orphan = json.loads(orphan_file.read_text())
    assert orphan["ppid"] == info["pid"]  # reparented to the supervisor, as to PID 1 in a container
    # Without reaping it would stay a zombie (state Z) for as long as the supervisor lives.
    wait_until_sync(lambda: process_gone(orphan["pid"]), what="the orphan to be reaped")
    # The child itself is still supervised normally.
    assert Path(f"/proc/{info['child']}").exists()
    supervisor.send(signal.SIGTERM)
    status, _, err = supervisor.finish()
    assert status == 128 + signal.SIGTERM, err
    assert json.loads(err.splitlines()[-1]) == {"orphans_reaped": 1}


def test_supervised_child_has_default_signal_dispositions(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    supervisor = Supervisor(tmp_path, ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
    supervisors.append(supervisor)
    status, out, err = supervisor.finish()
    assert status == 0, err
    masks = dict(line.split(":\t") for line in out.splitlines())
    assert not int(masks["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1))
    assert int(masks["SigBlk"], 16) == 0


def test_supervisor_command_not_found(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    supervisor = Supervisor(tmp_path, ["no-such-command-xyz"])
    supervisors.append(supervisor)
    status, _, err = supervisor.finish()
    assert status == EXIT_NOT_FOUND
    assert "command 'no-such-command-xyz' not found" in err
    assert "Traceback" not in err


def test_app_log_helper_reads_only_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text('{"event": "start", "pid": 1}\n{"event": "re')
    assert read_log(log) == [{"event": "start", "pid": 1}]


async def test_wait_until_fails_after_its_deadline() -> None:
    with pytest.raises(AssertionError, match="timed out waiting for never"):
        await wait_until(lambda: False, within=0.05, what="never")
