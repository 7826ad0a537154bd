"""Fixtures for the fault drills: the end-to-end fixtures, and a Secret Manager that can really be down.

``backend`` is the emulator as a process of its own on two fixed ports, keeping its data in a file
(``--data``): it can be stopped (SIGKILL: a crash, not a goodbye) and started again on the same ports with
the same secrets, which is what "the backend was down and came back" means to an agent. The in-process
``emulator`` fixture cannot do that (injected UNAVAILABLE faults are the other way, used by tests/e2e).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import requests
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
from prometheus_client.parser import text_string_to_metric_families

from testing.pubsub_emulator import free_port
from tests.e2e.conftest import (  # noqa: F401 - fixtures shared with tests/e2e, used by the drills
    AGENT_OUTPUTS,
    CANARY,
    PROJECT,
    AgentProcess,
    Agents,
    Upstream,
    agent_environment,
    agents,
    apps,
    output_dir,
    upstream,
)
from tests.sinks.conftest import mount_tmpfs  # noqa: F401 - a tiny tmpfs for the disk-full drill

TOKEN_HEADER = "X-Secrets-Agent-Token"
START_TIMEOUT = 30.0


# --------------------------------------------------------------------------------------------------
# What an operator and an app see of a running agent: its listeners, probes, metrics, endpoint
# --------------------------------------------------------------------------------------------------


@dataclass
class Listeners:
    """The endpoint and probes of one ``run`` agent (ports read from its log: the drills listen on 0)."""

    agent: AgentProcess
    output_dir: Path
    endpoint: str = ""
    probes: str = ""

    def __post_init__(self) -> None:
        endpoint = self._port(r"local endpoint listening on http://127\.0\.0\.1:(\d+)")
        self.endpoint = f"http://127.0.0.1:{endpoint}"
        probes = self._port(r"probes listening on 127\.0\.0\.1:(\d+)")
        self.probes = f"http://127.0.0.1:{probes}"

    def _port(self, pattern: str) -> int:
        def found() -> int | None:
            for message in self.agent.messages():
                if match := re.search(pattern, message):
                    return int(match.group(1))
            return None

        return self.agent.wait_until(found, within=20, what=f"a log line matching {pattern!r}")

    def ready(self) -> bool:
        return requests.get(f"{self.probes}/readyz", timeout=5).status_code == 200

    def not_ready_reasons(self) -> list[str]:
        response = requests.get(f"{self.probes}/readyz", timeout=5)
        assert response.status_code == 503, response.text
        reasons: list[str] = response.json()["reasons"]
        return reasons

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(sample name, sorted labels) -> value."""
        text = requests.get(f"{self.probes}/metrics", timeout=5).text
        assert CANARY not in text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def get(self, name: str) -> requests.Response:
        """``GET /v1/secrets/{name}`` with the token the agent wrote to ``<output_dir>/.token``."""
        token = (self.output_dir / ".token").read_text().strip()
        return requests.get(f"{self.endpoint}/v1/secrets/{name}", headers={TOKEN_HEADER: token}, timeout=5)


def read_through_data(directory: Path, name: str) -> bytes:
    """A file read the way the README tells apps to: through one resolution of ``..data``.

    A swap between the resolution and the read removes the snapshot resolved (a reader that lost the CPU for
    that long, as on a busy machine, sees it gone): then resolve again, as an app would, a few times."""
    for attempt in range(3):
        target = (directory / "..data").readlink()
        try:
            return (directory / target / name).read_bytes()
        except FileNotFoundError:
            if attempt == 2 or (directory / "..data").readlink() == target:
                raise  # not a swap: the file is not in the snapshot served
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------
# A backend that can be down: the emulator as a process on fixed ports, with its data on disk
# --------------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """The emulator as a process of its own; ``stop()`` kills it, ``start()`` brings it back on the same
    ports with the same secrets (``--data``)."""

    data: Path
    log: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "agent", "emulator", "--data", str(self.data)]
        argv += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}/emulator/v1/healthz", timeout=1
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the emulator did not start: {self.log.read_text(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGKILL: the backend vanishes mid-conversation, as a crashed or partitioned service does."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def upstream(self) -> Upstream:
        """The official client on this backend (its channel reconnects after a restart)."""
        channel = grpc.insecure_channel(self.grpc_target)
        client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=channel)
        )
        return Upstream(endpoints=None, client=client)  # type: ignore[arg-type] # only the client is used


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """A stopped backend with its ports reserved; the test starts it (with the canary secret in it)."""
    made = Backend(tmp_path / "emulator-data.json", tmp_path / "emulator.log")
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def backend_agents(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Agents]:
    """Agents pointed at ``backend`` (down or up); stopped afterwards, their output checked for the canary."""
    logs = tmp_path / "backend-agent-logs"
    logs.mkdir()
    launcher = Agents(agent_environment(backend.grpc_target), tmp_path, request.node.nodeid, logs)
    try:
        yield launcher
    finally:
        launcher.close()
    leaks = [o.test for o in AGENT_OUTPUTS if CANARY in o.stdout or CANARY in o.stderr]
    assert not leaks, f"the canary secret value appeared in the output of: {leaks}"


def seed_backend(backend: Backend, secrets: dict[str, str]) -> Upstream:
    """Start the backend, create the canary and ``secrets`` (name -> first value); it keeps running."""
    backend.start()
    up = backend.upstream()
    up.create("canary", CANARY)
    for name, value in secrets.items():
        up.create(name, value)
    return up


def assert_values_not_logged(agent: AgentProcess, *values: str) -> None:
    output = agent.stdout() + agent.stderr()
    for value in values:
        assert value not in output, "a secret value was logged"


__all__ = [
    "PROJECT",
    "Backend",
    "Listeners",
    "assert_values_not_logged",
    "read_through_data",
    "seed_backend",
]
