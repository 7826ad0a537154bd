"""``secrets-agent exec`` end to end: the real program (``python -m agent exec``) against the emulator.

Plain ``exec``: the app sees every secret as an environment variable, takes over the agent's pid, and its
exit status is the agent's; a missing command or a missing required secret fails clearly without running
anything. ``exec --watch``: signals sent to the agent reach the app, the agent exits with the app's status,
and a rotation (a version added with the official client) restarts the app with the new value, or sends
it ``--reload-signal``. Secret values carry a canary that must appear in no output of the agent: apps
write what they see to files, never to the stdout/stderr the agent shares with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.cloud import secretmanager_v1

from agent_emulator.server import EmulatorEndpoints
from testing.apps import app_argv, find_records, process_gone, wait_for_records_sync, wait_until_sync

PROJECT = "exec-e2e-project"
CANARY = "canary-5d1e8b-must-never-be-printed"
DB_V1 = f"{CANARY}-db-v1"
DB_V2 = f"{CANARY}-db-v2"
API_KEY = f"{CANARY}-api"
AGENT_EXIT_TIMEOUT = 30.0

# An app that records its pid and environment to a file (never to stdout), then exits with argv[2].
DUMP_ENV_APP = textwrap.dedent(
    """
    import json, os, sys
    with open(sys.argv[1], "w") as out:
        json.dump({"pid": os.getpid(), "env": dict(os.environ)}, out)
    sys.exit(int(sys.argv[2]))
    """
)


def add_secret(client: secretmanager_v1.SecretManagerServiceClient, secret_id: str, value: str) -> None:
    client.create_secret(
        parent=f"projects/{PROJECT}",
        secret_id=secret_id,
        secret=secretmanager_v1.Secret(replication={"automatic": {}}),
    )
    add_version(client, secret_id, value)


def add_version(client: secretmanager_v1.SecretManagerServiceClient, secret_id: str, value: str) -> None:
    client.add_secret_version(
        parent=f"projects/{PROJECT}/secrets/{secret_id}",
        payload=secretmanager_v1.SecretPayload(data=value.encode()),
    )


@dataclass
class Agent:
    """One ``python -m agent exec`` process; its stdout and stderr go to files (no pipe can fill up)."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        return self.process.wait(timeout=AGENT_EXIT_TIMEOUT)

    def output(self) -> str:
        """Everything the agent (and an app sharing its streams) printed so far."""
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def error_lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()


@dataclass
class ExecRunner:
    """Starts the agent against the emulator; cleans up whatever a failed test left running."""

    emulator: EmulatorEndpoints
    directory: Path
    agents: list[Agent] = field(default_factory=list)
    app_logs: list[Path] = field(default_factory=list)

    def start(
        self,
        options: Sequence[str],
        command: Sequence[str],
        *,
        config: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Agent:
        argv = [sys.executable, "-m", "agent", "exec", "--endpoint", self.emulator.grpc_target]
        argv += ["--project", PROJECT, "--log-format", "text", "--timeout", "20s", *options]
        if config is not None:
            config_file = self.directory / f"agent-{len(self.agents)}.yaml"
            config_file.write_text(textwrap.dedent(config))
            argv += ["--config", str(config_file)]
        # Nothing of the developer's environment may configure the agent under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_AGENT_", "SECRET_MANAGER_"))}
        env.update(extra_env or {})
        stdout = self.directory / f"agent-{len(self.agents)}.stdout"
        stderr = self.directory / f"agent-{len(self.agents)}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen([*argv, "--", *command], stdout=out, stderr=err, env=env)
        agent = Agent(process, stdout, stderr)
        self.agents.append(agent)
        return agent

    def app(
        self,
        name: str,
        *,
        env: Sequence[str] = (),
        on_term: str | None = None,
        exit_with: int | None = None,
        reload_signal: str | None = None,
    ) -> tuple[list[str], Path]:
        """The reloading test app's command line, recording into its own log file."""
        log = self.directory / f"{name}.jsonl"
        self.app_logs.append(log)
        argv = app_argv(log, env=env, on_term=on_term, exit_with=exit_with, reload_signal=reload_signal)
        return argv, log

    def cleanup(self) -> None:
        for agent in self.agents:
            if agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()
        # Watched apps run in their own session: a killed agent would leave them behind.
        for log in self.app_logs:
            for record in find_records(log, event="start"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(record["pid"]), signal.SIGKILL)  # type: ignore[call-overload]


@pytest.fixture
def runner(emulator: EmulatorEndpoints, tmp_path: Path) -> Iterator[ExecRunner]:
    r = ExecRunner(emulator, tmp_path)
    try:
        yield r
    finally:
        r.cleanup()
    for agent in r.agents:
        assert CANARY not in agent.output(), "a secret value was printed by the agent"


def assert_one_line_without_traceback(lines: list[str], *needles: str) -> None:
    matching = [line for line in lines if all(n in line for n in needles)]
    assert len(matching) == 1, f"expected one line with {needles} in {lines}"
    assert not any("Traceback" in line for line in lines), lines


# --------------------------------------------------------------------------------------------------
# exec: the agent becomes the app
# --------------------------------------------------------------------------------------------------


def test_exec_app_sees_every_secret_in_its_environment_under_the_agents_pid(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    add_secret(client, "db-password", DB_V1)
    add_secret(client, "api-key", API_KEY)
    config = """
        secrets:
          - {name: db-password, ref: db-password}              # env DB_PASSWORD by default
          - {name: api-key, ref: api-key, env: STRIPE_KEY}     # an explicit env name
          - {name: optional-flag, ref: absent, required: false}
    """
    seen = tmp_path / "seen.json"
    agent = runner.start([], [sys.executable, "-c", DUMP_ENV_APP, str(seen), "0"], config=config)

    assert agent.wait() == 0
    app = json.loads(seen.read_text())
    assert app["env"]["DB_PASSWORD"] == DB_V1
    assert app["env"]["STRIPE_KEY"] == API_KEY
    assert "API_KEY" not in app["env"], "an explicit env name replaces the default one"
    assert "OPTIONAL_FLAG" not in app["env"], "a missing optional secret is left out, not set empty"
    assert app["env"]["PATH"] == os.environ["PATH"], "the agent's own environment is passed on"
    # The app took over the agent's process (exec, no fork): nothing of the agent is left behind.
    assert app["pid"] == agent.pid
    assert "optional-flag" in agent.stderr.read_text(), "the skipped optional secret is reported"


def test_exec_app_does_not_inherit_the_agents_credentials(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    """The agent's own credential settings (the endpoint token, a notify URL with its password) configure
    the agent, not the app: exec passes on everything else of its environment, not those."""
    add_secret(client, "db-password", DB_V1)
    seen = tmp_path / "seen.json"
    credentials = {
        "SECRETS_AGENT_SERVER_TOKEN": "token-of-the-agent-0123456789abcdef",
        "SECRETS_AGENT_NOTIFY_URL": "https://user:pass@example.invalid/hook",
    }
    agent = runner.start(
        ["--secret", "db-password=db-password"],
        [sys.executable, "-c", DUMP_ENV_APP, str(seen), "0"],
        extra_env={**credentials, "APP_SETTING": "kept"},
    )

    assert agent.wait() == 0
    app_env = json.loads(seen.read_text())["env"]
    assert app_env["DB_PASSWORD"] == DB_V1
    assert app_env["APP_SETTING"] == "kept"
    assert not set(credentials) & set(app_env)


@pytest.mark.parametrize("status", [0, 3])
def test_exec_exit_status_is_the_apps(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path, status: int
) -> None:
    add_secret(client, "db-password", DB_V1)
    seen = tmp_path / "seen.json"
    agent = runner.start(
        ["--secret", "db-password=db-password"], [sys.executable, "-c", DUMP_ENV_APP, str(seen), str(status)]
    )

    assert agent.wait() == status
    assert seen.exists(), "the app ran"


def test_exec_missing_command_exits_127_with_one_clear_line(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    add_secret(client, "db-password", DB_V1)
    agent = runner.start(["--secret", "db-password=db-password"], ["no-such-program-4b1c", "--flag"])

    assert agent.wait() == 127
    assert_one_line_without_traceback(agent.error_lines(), "no-such-program-4b1c", "not found")


def test_exec_required_secret_missing_exits_1_and_never_runs_the_app(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    add_secret(client, "db-password", DB_V1)
    seen = tmp_path / "seen.json"
    agent = runner.start(
        ["--secret", "db-password=db-password", "--secret", "api-key=never-created"],
        [sys.executable, "-c", DUMP_ENV_APP, str(seen), "0"],
    )

    assert agent.wait() == 1
    assert not seen.exists(), "the app must not start without its required secrets"
    assert_one_line_without_traceback(
        agent.error_lines(), "required secret failed", "api-key", "never-created", "NOT_FOUND"
    )


# --------------------------------------------------------------------------------------------------
# exec --watch: the agent supervises the app
# --------------------------------------------------------------------------------------------------

# No rotation during these tests: the only thing that happens to the app is what the test does.
NO_POLLING = ["--watch", "--poll-interval", "1h", "--secret", "db-password=db-password"]


@pytest.mark.parametrize(
    ("on_term", "expected_status"),
    [pytest.param("die", 128 + signal.SIGTERM, id="dies-of-SIGTERM"), pytest.param("exit", 0, id="exits-0")],
)
def test_watch_forwards_signals_and_exits_with_the_apps_status(
    runner: ExecRunner,
    client: secretmanager_v1.SecretManagerServiceClient,
    on_term: str,
    expected_status: int,
) -> None:
    add_secret(client, "db-password", DB_V1)
    command, log = runner.app("app", env=["DB_PASSWORD"], on_term=on_term)
    agent = runner.start(NO_POLLING, command)

    [start] = wait_for_records_sync(log, event="start")
    assert start["env"] == {"DB_PASSWORD": DB_V1}
    assert start["ppid"] == agent.pid, "the agent stays as the app's parent"
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        os.kill(agent.pid, sig)
        wait_for_records_sync(log, event="signal", signal=sig.name)
    os.kill(agent.pid, signal.SIGTERM)

    assert agent.wait() == expected_status
    assert [r["signal"] for r in find_records(log, event="signal")] == ["SIGHUP", "SIGUSR1", "SIGTERM"]
    assert process_gone(start["pid"])
    assert len(find_records(log, event="start")) == 1, "signals never restart the app"


def test_watch_app_exiting_on_its_own_ends_the_agent_with_its_status(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    add_secret(client, "db-password", DB_V1)
    command, log = runner.app("app", exit_with=3)
    agent = runner.start(NO_POLLING, command)

    assert agent.wait() == 3
    assert len(find_records(log, event="start")) == 1


ROTATING = ["--watch", "--poll-interval", "0.3s", "--poll-jitter", "0", "--secret", "db-password=db-password"]


def test_watch_restarts_the_app_with_the_new_value_on_rotation(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    add_secret(client, "db-password", DB_V1)
    command, log = runner.app("app", env=["DB_PASSWORD"])
    agent = runner.start(ROTATING, command)
    [first] = wait_for_records_sync(log, event="start")
    assert first["env"] == {"DB_PASSWORD": DB_V1}

    add_version(client, "db-password", DB_V2)

    starts = wait_for_records_sync(log, count=2, event="start")
    second = starts[1]
    assert second["env"] == {"DB_PASSWORD": DB_V2}
    assert second["pid"] != first["pid"]
    assert second["ppid"] == agent.pid
    # The old app was stopped (SIGTERM) and reaped before or while the new one started: one app at a time.
    assert find_records(log, event="signal", pid=first["pid"]) == [
        {"event": "signal", "pid": first["pid"], "signal": "SIGTERM"}
    ]
    wait_until_sync(lambda: process_gone(first["pid"]), what="the old app to be reaped")

    os.kill(agent.pid, signal.SIGTERM)
    assert agent.wait() == 128 + signal.SIGTERM
    assert len(find_records(log, event="start")) == 2, "no restart after the stop signal"


def test_watch_with_reload_signal_signals_the_same_app_on_rotation(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    add_secret(client, "db-password", DB_V1)
    # The app takes SIGUSR2 as its reload signal: SIGHUP shows up in its log as a plain signal record.
    command, log = runner.app("app", env=["DB_PASSWORD"], reload_signal="SIGUSR2")
    agent = runner.start([*ROTATING, "--reload-signal", "SIGHUP"], command)
    [start] = wait_for_records_sync(log, event="start")

    add_version(client, "db-password", DB_V2)

    [hup] = wait_for_records_sync(log, event="signal", signal="SIGHUP")
    assert hup["pid"] == start["pid"], "the running app is signalled, not replaced"
    os.kill(agent.pid, signal.SIGTERM)
    assert agent.wait() == 128 + signal.SIGTERM
    assert len(find_records(log, event="start")) == 1
    assert [r["signal"] for r in find_records(log, event="signal")] == ["SIGHUP", "SIGTERM"]


# --------------------------------------------------------------------------------------------------
# the redaction net knows exec's first snapshot
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("watch", [False, True], ids=["exec", "exec-watch"])
def test_the_first_snapshot_is_redacted_from_exec_logs(
    runner: ExecRunner, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path, watch: bool
) -> None:
    """A value pasted by mistake as the reference of another secret: that secret's failure line quotes the
    reference, and so the value. The served values are registered with the log redaction net before any
    line is logged, so the line shows ``[REDACTED]`` instead (``run`` did this; ``exec`` did not)."""
    add_secret(client, "db-password", DB_V1)
    config = f"""
        secrets:
          - {{name: db-password, ref: db-password}}
          - {{name: pasted, ref: {DB_V1}, required: false}}
    """
    seen = tmp_path / "seen.json"
    options = ["--watch", "--poll-interval", "1h"] if watch else []
    agent = runner.start(options, [sys.executable, "-c", DUMP_ENV_APP, str(seen), "0"], config=config)

    assert agent.wait() == 0
    assert json.loads(seen.read_text())["env"]["DB_PASSWORD"] == DB_V1
    skipped = [line for line in agent.error_lines() if "optional secret skipped: pasted" in line]
    assert len(skipped) == 1, agent.error_lines()
    assert "[REDACTED]" in skipped[0]
    assert DB_V1 not in agent.output()  # the runner fixture checks the canary in every output too
