"""``secrets-agent rotate`` as a real process (``python -m agent``) against the emulator.

Exit codes, the table and JSON, usage errors, two processes racing for one secret, and a rotation killed
with SIGKILL in the middle of validation that the next ``rotate`` finishes or rolls back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from agent.rotation.lock import ANNOTATION
from agent.secrets.interface import SecretsBackend
from agent.secrets.types import SecretType
from agent_emulator.server import EmulatorEndpoints
from tests.rotation.helpers_engine import (
    CANARY,
    PROJECT,
    Programs,
    admin,
    advance_clock,
    command_settings,
    emulator_now,
    write_calls,
)

OLD = f"{CANARY}-old-cli-value-51ab"
TIMEOUT = 60


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


def env_for(emulator: EmulatorEndpoints) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_AGENT_", "PUBSUB_"))}
    env["SECRET_MANAGER_EMULATOR_HOST"] = emulator.grpc_target
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args, "--project", PROJECT]


def rotate(emulator: EmulatorEndpoints, *args: str) -> Run:
    done = subprocess.run(
        command("rotate", *args), env=env_for(emulator), capture_output=True, text=True, timeout=TIMEOUT
    )
    return Run(done.returncode, done.stdout, done.stderr)


def run_program(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def start(emulator: EmulatorEndpoints, args: list[str]) -> subprocess.Popen[str]:
    """A ``rotate`` process left running (its output is read with ``communicate``)."""
    return subprocess.Popen(
        args, env=env_for(emulator), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def write_config(tmp_path: Path, secrets: dict[str, object]) -> str:
    path = tmp_path / "rotation.yaml"
    path.write_text(yaml.safe_dump({"project": PROJECT, "secrets": secrets}))
    return str(path)


def assert_no_value(run: Run) -> None:
    assert CANARY not in run.stdout
    assert CANARY not in run.stderr


async def test_rotate_a_group_prints_the_table_logs_json_and_exits_0(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    await sm.create_secret("session", OLD, SecretType.SESSION_SECRET)
    await sm.create_secret("cert", OLD, SecretType.TLS_CERT)

    run = rotate(emulator, "all")

    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["SECRET", "TYPE", "VERSION", "RESULT", "MESSAGE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "1 -> 2" in rows["enc"]
    assert " rotated " in rows["enc"]
    assert "1 -> 2" in rows["session"]
    assert " rotated " in rows["session"]
    assert " skipped " in rows["cert"]
    assert "rotated elsewhere" in rows["cert"]
    logged = run.json_lines()
    audit = [line for line in logged if line["logger"] == "agent.audit"]
    assert {("add", "enc", "2"), ("add", "session", "2")} <= {
        (str(a["operation"]), str(a["secret"]), str(a["version"])) for a in audit
    }
    rotations = [line for line in logged if line["logger"] == "agent.rotation.engine"]
    assert [(r["secret"], r["result"]) for r in rotations] == [
        ("cert", "skipped"),
        ("enc", "rotated"),
        ("session", "rotated"),
    ]
    assert_no_value(run)


async def test_json_output_and_exit_1_when_a_rotation_is_rolled_back(
    emulator: EmulatorEndpoints, sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    await sm.create_secret("github", OLD, SecretType.OAUTH_TOKEN)
    config = write_config(
        tmp_path,
        {
            "stripe": command_settings(programs, validate=programs.reject()),
            "github": command_settings(programs, kind="oauth"),
        },
    )

    run = rotate(emulator, "api-keys", "oauth", "--config", config, "--output", "json")

    assert run.code == 1
    document = json.loads(run.stdout)
    assert document["ok"] is False
    assert document["summary"] == {"rolled-back": 1, "rotated": 1}
    by_secret = {r["secret"]: r for r in document["results"]}
    assert by_secret["stripe"]["result"] == "rolled-back"
    assert (by_secret["stripe"]["new_version"], by_secret["stripe"]["restored_version"]) == ("2", "3")
    assert "rejected by the issuer" in by_secret["stripe"]["message"]
    assert by_secret["github"] | {"message": None} == {
        "secret": "github",
        "type": "oauth-token",
        "old_version": "1",
        "new_version": "2",
        "result": "rotated",
        "message": None,
        "provider": "command",
        "restored_version": None,
        "resumed_run": None,
    }
    assert await sm.get_secret("stripe") == OLD
    assert_no_value(run)


async def test_usage_and_configuration_errors_exit_2_before_anything_runs(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    admin(emulator, "POST", "/counters:reset", {})
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("secrets:\n  enc: {length: 32}\nprojekt: x\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)

    cases = [
        (rotate(emulator), "what to rotate?"),
        (rotate(emulator, "all", "--now", "yesterday"), "--now: expected an RFC 3339 time"),
        (rotate(emulator, "all", "--lock-timeout", "soon"), "--lock-timeout: expected a duration"),
        (rotate(emulator, "--listen", "enc", "--topic", "projects/p/topics/t"), "takes no TARGET"),
        (rotate(emulator, "--listen"), "needs --subscription S or --topic T"),
        (rotate(emulator, "all", "--config", str(bad_config)), "secrets.enc.provider: required"),
        (rotate(emulator, "all", "--backup-dir", str(shared)), "chmod 700"),
    ]

    for run, message in cases:
        assert run.code == 2, (message, run.stderr)
        assert message in run.stderr
    assert "projekt: unknown key" in cases[5][0].stderr  # every problem of the file at once
    assert write_calls(emulator) == 0


async def test_dry_run_shows_the_plan_and_writes_nothing(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    admin(emulator, "POST", "/counters:reset", {})

    run = rotate(emulator, "all", "--dry-run", "--disable-previous")

    assert run.code == 1  # stripe has no provider: the plan already shows it would fail
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert " planned " in rows["enc"]
    assert "would rotate with symmetric (default)" in rows["enc"]
    assert "then disable the previous version" in rows["enc"]
    assert " failed " in rows["stripe"]
    assert "no rotation provider" in rows["stripe"]
    assert write_calls(emulator) == 0


async def test_due_only_with_now_from_the_emulator_clock(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)  # 180 days
    await sm.create_secret("jwt", OLD, SecretType.JWT_SECRET)  # 180 days

    before = rotate(emulator, "symmetric", "--due-only", "--now", emulator_now(emulator), "--output", "json")
    assert before.code == 0
    assert [r["result"] for r in json.loads(before.stdout)["results"]] == ["not-due", "not-due"]

    # Planning ahead: what is due in 200 days, without moving any clock.
    plan = rotate(emulator, "symmetric", "--due-only", "--dry-run", "--now", "2100-01-01T00:00:00Z")
    assert plan.stdout.count(" planned ") == 2

    advance_clock(emulator, 200 * 86400)
    after = rotate(emulator, "symmetric", "--due-only", "--now", emulator_now(emulator), "--output", "json")
    assert after.code == 0
    assert [(r["secret"], r["result"], r["new_version"]) for r in json.loads(after.stdout)["results"]] == [
        ("enc", "rotated", "2"),
        ("jwt", "rotated", "2"),
    ]


# --------------------------------------------------------------------------------------------------
# Two processes, and a process killed mid-rotation
# --------------------------------------------------------------------------------------------------


def validator(tmp_path: Path) -> tuple[list[str], Path, Path, Path]:
    """A validate program that writes its pid to ``started``, sleeps while ``slow`` exists, and rejects
    while ``reject`` exists."""
    started, slow, reject = tmp_path / "validating.pid", tmp_path / "slow", tmp_path / "reject"
    script = tmp_path / "validate.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            value = sys.stdin.read()
            with open({str(started)!r}, "w") as f:
                f.write(str(os.getpid()))
            while os.path.exists({str(slow)!r}):
                time.sleep(0.05)
            if os.path.exists({str(reject)!r}) or not value.startswith("{CANARY}"):
                print("the issuer rejected the key", file=sys.stderr)
                sys.exit(1)
            """
        )
    )
    return [sys.executable, str(script)], started, slow, reject


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists() or not path.read_text():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


async def test_two_processes_rotate_one_secret_once(
    emulator: EmulatorEndpoints, sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    validate, started, slow, _ = validator(tmp_path)
    slow.touch()
    config = write_config(tmp_path, {"stripe": command_settings(programs, validate=validate)})
    args = command("rotate", "stripe", "--config", config, "--output", "json")

    first = start(emulator, args)
    wait_for(started, first)  # the first holds the lock and is validating
    second = rotate(emulator, "stripe", "--config", config, "--output", "json")
    slow.unlink()
    out, _ = first.communicate(timeout=TIMEOUT)

    assert (first.returncode, second.code) == (0, 0)  # a rotation in progress elsewhere is not a failure
    assert json.loads(out)["results"][0]["result"] == "rotated"
    locked = json.loads(second.stdout)["results"][0]
    assert locked["result"] == "locked"
    assert f"pid {first.pid}" in locked["message"]
    assert {v.version for v in await sm.list_versions("stripe")} == {"1", "2"}


@pytest.mark.parametrize("outcome", ["finished", "rolled back"])
async def test_a_rotation_killed_during_validation_is_resumed_by_the_next_rotate(
    emulator: EmulatorEndpoints, sm: SecretsBackend, programs: Programs, tmp_path: Path, outcome: str
) -> None:
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    validate, started, slow, reject = validator(tmp_path)
    slow.touch()
    config = write_config(tmp_path, {"stripe": command_settings(programs, validate=validate)})

    victim = start(emulator, command("rotate", "stripe", "--config", config))
    wait_for(started, victim)
    victim.kill()  # SIGKILL: no cleanup of any kind
    victim.communicate(timeout=TIMEOUT)
    os.kill(int(started.read_text()), signal.SIGKILL)  # its validate program, in a session of its own
    slow.unlink()
    started.unlink()
    info = await sm.get_secret_info("stripe")
    assert '"step":"validate"' in info.annotations[ANNOTATION]  # the dead run's state is left behind
    if outcome == "rolled back":
        reject.touch()

    run = rotate(emulator, "stripe", "--config", config, "--output", "json")

    result = json.loads(run.stdout)["results"][0]
    assert result["message"].startswith("resumed interrupted run ")
    assert f"pid {victim.pid}) is gone" in result["message"]
    versions = {v.version: v.state for v in await sm.list_versions("stripe")}
    if outcome == "finished":
        assert run.code == 0
        assert (result["result"], result["new_version"]) == ("rotated", "2")
        assert versions == {"1": "ENABLED", "2": "ENABLED"}
        assert (await sm.get_secret("stripe")).startswith(f"{CANARY}-key-")
    else:
        assert run.code == 1
        assert (result["result"], result["restored_version"]) == ("rolled-back", "3")
        assert versions == {"1": "ENABLED", "2": "DISABLED", "3": "ENABLED"}
        assert await sm.get_secret("stripe") == OLD
    assert ANNOTATION not in (await sm.get_secret_info("stripe")).annotations
    assert_no_value(run)


async def test_rotate_a_local_env_file(tmp_path: Path) -> None:
    """--dotenv: the same rotation over a .env file (no project, no Secret Manager); comments stay."""
    from agent.secrets.local import LocalSecretManager

    dotenv = tmp_path / ".env"
    dotenv.write_text("# keys for local development\n")
    async with LocalSecretManager(dotenv) as local:
        await local.create_secret("SESSION_KEY", OLD, SecretType.SESSION_SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_AGENT_", "SECRET_MANAGER_"))}

    done = run_program(
        [sys.executable, "-m", "agent", "rotate", "symmetric", "--dotenv", str(dotenv), "--disable-previous"],
        env,
    )

    assert done.returncode == 0, done.stderr
    assert "1 -> 2" in done.stdout
    text = dotenv.read_text()
    assert text.startswith("# keys for local development\n")
    assert OLD not in text  # the .env holds the current value: the new one
    async with LocalSecretManager(dotenv) as local:
        assert {v.version: v.state for v in await local.list_versions("SESSION_KEY")} == {
            "1": "DISABLED",
            "2": "ENABLED",
        }
    assert CANARY not in done.stdout + done.stderr
