"""``examples/demo.sh`` (``make run``), run for real from a temporary copy of ``examples/`` on free ports.

It must run the agent against the emulator it started itself, never against whatever else answers on the
emulator's port, and its ports must be choosable (``make run EMULATOR_HTTP_PORT=...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import javaproperties
import pytest
import yaml
from dotenv import dotenv_values

from tests.e2e.conftest import eventually

REPO = Path(__file__).resolve().parents[2]
BANNER = "secrets-agent demo:"
PORTS_9XXX = ("EMULATOR_GRPC_PORT=9780", "EMULATOR_HTTP_PORT=9781", "AGENT_PORT=9730", "PROBES_PORT=9731")
FREE_PORTS = {"EMULATOR_GRPC_PORT": "0", "EMULATOR_HTTP_PORT": "0", "AGENT_PORT": "0", "PROBES_PORT": "0"}


class ImpostorHandler(BaseHTTPRequestHandler):
    """Some other program on the emulator's port, answering 200 OK (even to the emulator's healthz)."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """The port of a foreign HTTP server that answers like a healthy emulator."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImpostorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Demo:
    """demo.sh running in its own process group, its output in files."""

    root: Path
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr()}"

    def stop(self) -> None:
        """SIGTERM to the whole group (the script, the emulator, the agent); SIGKILL for any straggler."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired, AssertionError):
            self.popen.wait(timeout=15)
            eventually(lambda: not _group_alive(self.popen.pid), within=15, what="the demo to stop")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    """A copy of examples/ beside a link to the venv: demo.sh writes its ./demo-secrets in here."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copytree(REPO / "examples", root / "examples")
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


StartDemo = Callable[[Mapping[str, str]], Demo]
"""Starts demo.sh with these environment variables (its ports)."""


@pytest.fixture
def start_demo(demo_root: Path) -> Iterator[StartDemo]:
    started: list[Demo] = []

    def start(ports: Mapping[str, str]) -> Demo:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SECRETS_AGENT_")
            and key
            not in ("SECRET_MANAGER_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
        }
        env.update(ports, PYTHONUNBUFFERED="1")
        stdout, stderr = demo_root / "demo.stdout", demo_root / "demo.stderr"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(
                ["bash", str(demo_root / "examples" / "demo.sh")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=demo_root,
                start_new_session=True,  # its own process group: stopped (and cleaned up) as one
            )
        demo = Demo(demo_root, popen, stdout, stderr)
        started.append(demo)
        return demo

    try:
        yield start
    finally:
        for demo in started:
            demo.stop()


def test_the_demo_refuses_a_foreign_server_on_the_emulator_port(
    start_demo: StartDemo, impostor: int, demo_root: Path
) -> None:
    demo = start_demo({**FREE_PORTS, "EMULATOR_HTTP_PORT": str(impostor)})
    # It must give up by itself: neither wait for ever nor carry on with the impostor.
    eventually(
        lambda: demo.popen.poll() is not None or BANNER in demo.stdout(),
        within=60,
        what="the demo to exit or print its banner",
    )
    assert demo.popen.poll() is not None, f"the demo went on with a foreign server\n{demo.output()}"
    assert demo.popen.returncode == 1, demo.output()
    assert BANNER not in demo.stdout()
    assert f"demo: the emulator did not start (ports 0/{impostor} in use?" in demo.stderr(), demo.output()
    assert "Traceback" not in demo.stderr()
    assert not (demo_root / "demo-secrets").exists()  # no agent ran


def test_the_demo_runs_on_ports_of_our_choosing(start_demo: StartDemo, demo_root: Path) -> None:
    demo = start_demo(FREE_PORTS)
    secret = demo_root / "demo-secrets" / "db-password"

    def served() -> bool:
        assert demo.popen.poll() is None, f"the demo exited ({demo.popen.returncode})\n{demo.output()}"
        return secret.exists() and secret.read_bytes() == b"demo-password-v2"

    eventually(served, within=60, what="the demo's agent to write demo-secrets/db-password")
    assert BANNER in demo.stdout()
    # The agent listens where it was told (port 0: wherever the OS chose), not on the default 8730/8731.
    eventually(lambda: "local endpoint listening on http://127.0.0.1:" in demo.stderr(), within=10)
    assert "127.0.0.1:8730" not in demo.stderr()
    assert "probes listening on" in demo.stderr()
    assert "127.0.0.1:8731" not in demo.stderr()
    readme_shapes_are_what_the_demo_writes(demo_root / "demo-secrets")


def readme_shapes_are_what_the_demo_writes(out: Path) -> None:
    """The worked examples of README's "Shaping the output" (one of each shape), as `make run` writes them."""
    assert (out / "db" / "password").read_bytes() == b"demo p@ss/1"
    assert (
        out / "db" / "url"
    ).read_bytes() == b"postgresql://app:demo%20p%40ss%2F1@db.demo.internal:5432/payments"
    config = yaml.safe_load((out / "config" / "app.yaml").read_text())
    assert config == {
        "database": {"user": "app", "password": "demo p@ss/1"},
        "api_key": "demo-api-key",
        "checkout_enabled": True,
    }
    crt, key = (out / "tls" / "tls.crt").read_text(), (out / "tls" / "tls.key").read_text()
    assert crt.startswith("-----BEGIN CERTIFICATE-----\n")
    assert crt.count("BEGIN") == 1
    assert key.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert key.count("BEGIN") == 1
    properties = javaproperties.loads((out / "application.properties").read_text())
    assert properties == {"db-password": "demo-password-v2", "api-key": "demo-api-key"}
    env = dotenv_values(out / "app.env")
    assert env["DATABASE_URL"] == (out / "db" / "url").read_text()
    assert env["DATABASE_PASSWORD"] == "demo p@ss/1"


def test_make_run_passes_its_port_variables_to_the_demo() -> None:
    dry = subprocess.run(
        ["make", "-n", "-C", str(REPO), "run", *PORTS_9XXX],
        capture_output=True,
        text=True,
        check=True,
    )
    command = dry.stdout.replace("\\\n", " ")
    for setting in PORTS_9XXX:
        name, value = setting.split("=")
        assert f"{name}='{value}'" in command
    assert "bash examples/demo.sh" in command
