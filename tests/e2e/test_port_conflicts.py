"""A real ``run`` / ``dev`` whose listen address is taken (by a plain socket here): one clear line naming
the setting to change, exit 1, no traceback, and nothing written into the output directory.

The listeners bind before anything is written, so an agent that cannot start leaves the directory (and
the ``.token`` the clients of another agent read) as it found it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.e2e.conftest import Agents, Finished, Upstream, write_config

ENDPOINT_TAKEN = (
    "the local endpoint cannot listen on 127.0.0.1:{port}: Address already in use; set server.listen "
    "(--listen, SECRETS_AGENT_SERVER_LISTEN) to a free address"
)
PROBES_TAKEN = (
    "the probes listener cannot listen on 127.0.0.1:{port}: Address already in use; set probes.listen "
    "(--probes-listen, SECRETS_AGENT_PROBES_LISTEN) to a free address, or probes.enabled: false"
)


@pytest.fixture
def taken_port() -> Iterator[Callable[[], int]]:
    """Ports held by plain listening sockets for the test (as another program would)."""
    held: list[socket.socket] = []

    def take() -> int:
        sock = socket.socket()
        held.append(sock)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port: int = sock.getsockname()[1]
        return port

    try:
        yield take
    finally:
        for sock in held:
            sock.close()


def plain_lines(finished: Finished) -> list[str]:
    """What the program printed besides its JSON log records (the CLI's own error lines)."""
    return [line for line in finished.stderr.splitlines() if line.strip() and not line.startswith("{")]


def assert_one_clean_line(finished: Finished, line: str) -> None:
    assert finished.returncode == 1, finished.stderr
    assert plain_lines(finished) == [f"secrets-agent: {line}"]
    assert "Traceback" not in finished.stderr
    assert "never retrieved" not in finished.stderr
    assert not finished.messages("ERROR")
    assert not finished.messages("CRITICAL")


def assert_nothing_written(output_dir: Path) -> None:
    """Only the lock file: no token, no snapshot, no record."""
    assert sorted(p.name for p in output_dir.iterdir()) == ["..lock"]


def run_config(tmp_path: Path, output_dir: Path, upstream: Upstream) -> Path:
    upstream.create("db-password", "hunter2-v1")
    return write_config(
        tmp_path / "agent.yaml",
        [{"name": "db-password", "ref": Upstream.ref("db-password")}],
        output_dir=str(output_dir),
    )


def test_run_with_the_endpoint_port_taken(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path, taken_port: Callable[[], int]
) -> None:
    port = taken_port()
    config = run_config(tmp_path, output_dir, upstream)
    finished = agents.run("run", "-c", config, "--listen", f"127.0.0.1:{port}", within=20)
    assert_one_clean_line(finished, ENDPOINT_TAKEN.format(port=port))
    assert_nothing_written(output_dir)
    assert upstream.calls("AccessSecretVersion") == 0  # it stopped before the bootstrap


def test_run_with_the_probes_port_taken(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path, taken_port: Callable[[], int]
) -> None:
    port = taken_port()
    config = run_config(tmp_path, output_dir, upstream)
    finished = agents.run(
        "run", "-c", config, env={"SECRETS_AGENT_PROBES_LISTEN": f"127.0.0.1:{port}"}, within=20
    )
    assert_one_clean_line(finished, PROBES_TAKEN.format(port=port))
    assert_nothing_written(output_dir)


def test_run_with_both_ports_taken_names_both_in_one_line(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path, taken_port: Callable[[], int]
) -> None:
    endpoint, probes = taken_port(), taken_port()
    config = run_config(tmp_path, output_dir, upstream)
    finished = agents.run(
        "run",
        "-c",
        config,
        "--listen",
        f"127.0.0.1:{endpoint}",
        "--probes-listen",
        f"127.0.0.1:{probes}",
        within=20,
    )
    both = f"{ENDPOINT_TAKEN.format(port=endpoint)}; {PROBES_TAKEN.format(port=probes)}"
    assert_one_clean_line(finished, both)
    assert_nothing_written(output_dir)


def test_dev_with_both_ports_taken(
    agents: Agents, output_dir: Path, tmp_path: Path, taken_port: Callable[[], int]
) -> None:
    (tmp_path / ".env").write_text("API_KEY=dev-key-123\n")
    endpoint, probes = taken_port(), taken_port()
    finished = agents.run(
        "dev",
        "--output-dir",
        output_dir,
        "--listen",
        f"127.0.0.1:{endpoint}",
        "--probes-listen",
        f"127.0.0.1:{probes}",
        within=20,
    )
    both = f"{ENDPOINT_TAKEN.format(port=endpoint)}; {PROBES_TAKEN.format(port=probes)}"
    assert_one_clean_line(finished, both)
    assert_nothing_written(output_dir)


def test_the_webhook_with_its_port_taken(tmp_path: Path, taken_port: Callable[[], int]) -> None:
    """The same mistake's sibling: ``secrets-agent webhook --listen`` on a taken port."""
    ca = trustme.CA()
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    port = taken_port()
    argv = [sys.executable, "-m", "agent", "webhook", "--listen", f"127.0.0.1:{port}"]
    argv += ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path, check=False)
    assert done.returncode == 1, done.stderr
    plain = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert plain == [
        f"secrets-agent: the webhook cannot listen on 127.0.0.1:{port}: Address already in use; set --listen "
        "to a free address"
    ]
    assert "Traceback" not in done.stderr
