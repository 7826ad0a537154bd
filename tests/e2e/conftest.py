"""End-to-end fixtures: the real ``secrets-agent`` program (``python -m agent``) against a real emulator.

* ``upstream``: the test's emulator, seeded through the official client, with its admin API (faults,
  counters). Every test's emulator holds the canary secret ``CANARY`` (served by the agent as ``canary``).
* ``agents``: starts the agent as a subprocess (``start``: a daemon, ``run``: a command that finishes),
  with ``SECRET_MANAGER_EMULATOR_HOST`` pointing at the emulator. Output goes to files, so it can be read
  while the agent runs and a chatty agent never blocks on a full pipe. At the end of every test the
  agents still running get SIGTERM (then SIGKILL), their stdout and stderr join the session-wide
  ``AGENT_OUTPUTS``, and the test fails if the canary value appears in any output collected so far.

Waiting is always on a condition with a deadline (``eventually``), never a bare sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from google.cloud import secretmanager_v1

from agent_emulator.server import EmulatorEndpoints

CANARY = "canary-e2e-9d41b7-if-you-read-this-it-leaked"
"""A secret value every agent in these tests serves; no agent output may ever contain it."""
PROJECT = "agent-e2e-tests"

T = TypeVar("T")


def eventually(
    condition: Callable[[], T | bool | None],
    within: float = 10.0,
    what: str = "condition",
    *,
    explain: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``condition`` every 10 ms until it returns something truthy (returned); fail after ``within``."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            detail = explain()
            raise AssertionError(
                f"timed out after {within}s waiting for {what}" + (f"\n{detail}" if detail else "")
            )
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------------
# The emulator, as the test sees it
# --------------------------------------------------------------------------------------------------


class Upstream:
    """The test's Secret Manager: the official client for data, the admin API for faults and counters."""

    def __init__(
        self, endpoints: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient
    ) -> None:
        self.endpoints = endpoints
        self.client = client

    @staticmethod
    def ref(name: str, version: str | None = None) -> str:
        """The full reference of a secret (a version number pins it)."""
        base = f"projects/{PROJECT}/secrets/{name}"
        return base if version is None else f"{base}/versions/{version}"

    def create(self, name: str, *values: bytes | str) -> None:
        """Create the secret and add ``values`` as versions 1, 2, ..."""
        self.client.create_secret(
            request={
                "parent": f"projects/{PROJECT}",
                "secret_id": name,
                "secret": {"replication": {"automatic": {}}},
            }
        )
        for value in values:
            self.add(name, value)

    def add(self, name: str, value: bytes | str) -> str:
        """Add a version through the official client; returns its number."""
        data = value.encode() if isinstance(value, str) else value
        version = self.client.add_secret_version(
            request={"parent": self.ref(name), "payload": {"data": data}}
        )
        return version.name.rsplit("/", 1)[-1]

    def disable(self, name: str, version: str) -> None:
        self.client.disable_secret_version(request={"name": self.ref(name, version)})

    def enable(self, name: str, version: str) -> None:
        self.client.enable_secret_version(request={"name": self.ref(name, version)})

    # -- admin API -----------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoints.admin_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def counters(self) -> dict[str, dict[str, int]]:
        """Calls per method and status since the last reset, e.g. ``{"AccessSecretVersion": {"OK": 3}}``."""
        methods: dict[str, dict[str, int]] = self._admin("GET", "/counters")["methods"]
        return methods

    def calls(self, method: str, status: str | None = None) -> int:
        """How many ``method`` calls (with ``status``, or any) the emulator has answered since the reset."""
        by_status = self.counters().get(method, {})
        return sum(by_status.values()) if status is None else by_status.get(status, 0)

    def total_calls(self) -> int:
        total: int = self._admin("GET", "/counters")["total"]
        return total

    def reset_counters(self) -> None:
        self._admin("POST", "/counters:reset", {})

    def set_faults(self, faults: Mapping[str, Mapping[str, object]]) -> None:
        """Replace the fault rules, e.g. ``{"AccessSecretVersion": {"corrupt_crc": 1.0}}``."""
        self._admin("PUT", "/faults", {"faults": faults})

    def clear_faults(self) -> None:
        self._admin("POST", "/faults:clear", {})


@pytest.fixture
def upstream(emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient) -> Upstream:
    """The test's emulator with the canary secret in it, call counters reset after the seeding."""
    up = Upstream(emulator, client)
    up.create("canary", CANARY)
    up.reset_counters()
    return up


def canary_secret() -> dict[str, object]:
    """The config entry of the canary secret (every agent serves it, so a leak would be visible)."""
    return {"name": "canary", "ref": Upstream.ref("canary")}


def write_config(path: Path, secrets: Sequence[Mapping[str, object]], **settings: object) -> Path:
    """A YAML config file with ``secrets`` (the canary is added) and top-level ``settings``."""
    document = {**settings, "secrets": [*secrets, canary_secret()]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------
# The agent as a process
# --------------------------------------------------------------------------------------------------


@dataclass
class AgentOutput:
    """Everything one agent process printed."""

    test: str
    argv: list[str]
    stdout: str
    stderr: str


def parse_records(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines (the default ``--log-format json``); other lines are skipped."""
    records = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class AgentProcess:
    """A running ``python -m agent ...``; stdout and stderr go to files that can be read at any time."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path, logs: Path) -> None:
        self.argv = argv
        self.stdout_path = logs.with_suffix(".stdout")
        self.stderr_path = logs.with_suffix(".stderr")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err, env=dict(env), cwd=cwd)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return parse_records(self.stderr())

    def messages(self, severity: str | None = None) -> list[str]:
        return [
            str(r.get("message")) for r in self.records() if severity is None or r.get("severity") == severity
        ]

    def tail(self, lines: int = 30) -> str:
        return "agent stderr (last lines):\n" + "\n".join(self.stderr().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_until(self, condition: Callable[[], T | bool | None], within: float = 10.0, what: str = "") -> T:
        """``eventually(condition)``, failing at once (with the agent's output) if the agent exits."""

        def check() -> T | bool | None:
            result = condition()
            if not result and not self.alive():
                raise AssertionError(
                    f"the agent exited ({self.popen.returncode}) while waiting for {what}\n{self.tail()}"
                )
            return result

        return eventually(check, within, what or "a condition", explain=self.tail)

    def wait_for_log(self, text: str, within: float = 10.0, *, severity: str | None = None) -> str:
        """The first log message containing ``text`` (at ``severity``), waiting for it."""

        def found() -> str | None:
            return next((m for m in self.messages(severity) if text in m), None)

        return self.wait_until(found, within, f"a log message containing {text!r}")

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, within: float) -> int:
        """The exit code; fails (and kills the agent) if it does not exit within ``within`` seconds."""
        try:
            return self.popen.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"the agent did not exit within {within}s\n{self.tail()}") from None

    def stop(self, within: float = 10.0) -> int:
        """SIGTERM, then the exit code (fails if the agent does not stop within ``within`` seconds)."""
        if self.alive():
            self.send(signal.SIGTERM)
        return self.wait(within)


@dataclass
class Finished:
    """A command (``init``) that ran to its end."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    """Wall-clock time from start to exit, process start-up included."""

    @property
    def records(self) -> list[dict[str, Any]]:
        return parse_records(self.stderr)

    def messages(self, severity: str | None = None) -> list[str]:
        return [
            str(r.get("message")) for r in self.records if severity is None or r.get("severity") == severity
        ]


AGENT_OUTPUTS: list[AgentOutput] = []
"""Everything every agent process printed in this session (checked for the canary after each test)."""


@dataclass
class Agents:
    """Starts agent processes for one test and collects what they printed."""

    env: dict[str, str]
    cwd: Path
    test: str
    logs: Path
    processes: list[AgentProcess] = field(default_factory=list)

    def start(self, *args: str | Path, env: Mapping[str, str] | None = None) -> AgentProcess:
        """Start ``python -m agent ARGS`` in the background."""
        argv = [sys.executable, "-m", "agent", *map(str, args)]
        process = AgentProcess(
            argv, {**self.env, **(env or {})}, self.cwd, self.logs / f"agent-{len(self.processes)}"
        )
        self.processes.append(process)
        return process

    def run(self, *args: str | Path, env: Mapping[str, str] | None = None, within: float = 30.0) -> Finished:
        """Run ``python -m agent ARGS`` to its end (failing after ``within`` seconds)."""
        process = self.start(*args, env=env)
        code = process.wait(within)
        return Finished(code, process.stdout(), process.stderr(), time.monotonic() - process.started)

    def close(self) -> None:
        for process in self.processes:
            if process.alive():
                process.send(signal.SIGTERM)
        for process in self.processes:
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            AGENT_OUTPUTS.append(AgentOutput(self.test, process.argv, process.stdout(), process.stderr()))


def agent_environment(emulator_host: str) -> dict[str, str]:
    """The environment of an agent: ours, minus any SECRETS_AGENT_* (unknown ones are config errors) and
    Google credentials, plus the emulator."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SECRETS_AGENT_")
        and key
        not in ("SECRET_MANAGER_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
    }
    env["SECRET_MANAGER_EMULATOR_HOST"] = emulator_host
    env["PYTHONUNBUFFERED"] = "1"
    # Free ports: agents of parallel test runs must not collide on the default 8730/8731. Tests that talk
    # to the endpoint or probes read the bound ports from the agent's log.
    env["SECRETS_AGENT_SERVER_LISTEN"] = "127.0.0.1:0"
    env["SECRETS_AGENT_PROBES_LISTEN"] = "127.0.0.1:0"
    return env


@pytest.fixture
def agents(upstream: Upstream, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Agents]:
    """Start agents against the test's emulator; afterwards stop them and check all output for the canary."""
    logs = tmp_path / "agent-logs"
    logs.mkdir()
    launcher = Agents(agent_environment(upstream.endpoints.grpc_target), tmp_path, request.node.nodeid, logs)
    try:
        yield launcher
    finally:
        launcher.close()
    leaks = [
        f"{output.test}: {' '.join(output.argv[3:])}"
        for output in AGENT_OUTPUTS
        if CANARY in output.stdout or CANARY in output.stderr
    ]
    assert not leaks, f"the canary secret value appeared in the output of: {leaks}"


@pytest.fixture
def output_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the agent writes: a fresh directory on tmpfs (/dev/shm) when there is one, as in a pod."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        directory = Path(tempfile.mkdtemp(prefix="agent-e2e-", dir=shm))
        try:
            yield directory / "secrets"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path / "secrets"


def data_target(directory: Path) -> str:
    """Where ``..data`` points: the snapshot directory now served (changes with every swap)."""
    return os.readlink(directory / "..data")


def read_file(directory: Path, name: str) -> bytes | None:
    try:
        return (directory / name).read_bytes()
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------
# The app being reloaded (testing/apps/reloading_app.py)
# --------------------------------------------------------------------------------------------------


@dataclass
class Apps:
    """Starts real app processes (``testing.apps.app_argv``) and kills whatever is left at the end."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def apps() -> Iterator[Apps]:
    launcher = Apps()
    try:
        yield launcher
    finally:
        launcher.close()
