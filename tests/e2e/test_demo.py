"""``examples/demo.sh`` (``make run``), run for real from a temporary copy of ``examples/`` on free ports.

It must run the agent against the emulator it started itself, never against whatever else answers on the
emulator's port, and its ports must be choosable (``make run EMULATOR_HTTP_PORT=...``). README.md's first
block (``make run``) is tested here: ``make run`` itself, through the README's five-minute tour (the tour's
other blocks run again against the same two commands in tests/docs/test_examples.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import javaproperties
import pytest
import yaml
from dotenv import dotenv_values

from agent.endpoint.token import TOKEN_HEADER
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
StartCommand = Callable[[Sequence[str], Mapping[str, str]], Demo]
"""Starts a command in the demo's directory, with these environment variables."""


@pytest.fixture
def start_command(demo_root: Path) -> Iterator[StartCommand]:
    started: list[Demo] = []

    def start(argv: Sequence[str], ports: Mapping[str, str]) -> Demo:
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
                list(argv),
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


@pytest.fixture
def start_demo(demo_root: Path, start_command: StartCommand) -> StartDemo:
    return lambda ports: start_command(["bash", str(demo_root / "examples" / "demo.sh")], ports)


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
    """One of each shape examples/demo-agent.yaml configures (README's tour shows some), as `make run` writes
    them."""
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


# --------------------------------------------------------------------------------------------------
# README.md: `make run`, then the five-minute tour
# --------------------------------------------------------------------------------------------------

README = REPO / "README.md"
DEFAULT_PORTS = {
    "EMULATOR_GRPC_PORT": "8780",
    "EMULATOR_HTTP_PORT": "8781",
    "AGENT_PORT": "8730",
    "PROBES_PORT": "8731",
}
"""The ports `make run` uses when none is given, which the README's tour names."""


def _make_prerequisites(root: Path, target: str) -> list[str]:
    """The prerequisites of ``target`` in the Makefile at ``root`` (the install stamps of the virtualenv)."""
    database = subprocess.run(
        ["make", "-C", str(root), "-n", "-p", target],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    line = next(line for line in database.splitlines() if line.startswith(f"{target}:"))
    return line.partition(":")[2].split()


def _http(url: str, *, token: str | None = None, body: object | None = None) -> tuple[int, bytes]:
    """One request: GET, or POST of ``body`` as JSON; the status and the body (errors included)."""
    headers = {TOKEN_HEADER: token} if token is not None else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _add_version(rest: str, secret: str, value: str) -> None:
    """The tour's rotation: AddSecretVersion through the emulator's REST API."""
    payload = {"payload": {"data": base64.b64encode(value.encode()).decode()}}
    status, body = _http(f"{rest}/v1/projects/demo-project/secrets/{secret}:addVersion", body=payload)
    assert status == 200, body


def test_make_run_is_the_readme_tour(demo_root: Path, start_command: StartCommand) -> None:
    # The README's tour names the ports `make run` uses by default.
    readme = README.read_text()
    dry = subprocess.run(["make", "-n", "-C", str(REPO), "run"], capture_output=True, text=True, check=True)
    for name, port in DEFAULT_PORTS.items():
        assert f"{name}='{port}'" in dry.stdout.replace("\\\n", " ")
        assert f"127.0.0.1:{port}" in readme, f"README's tour does not use the default {name}"
    assert f'-H "{TOKEN_HEADER}: $TOKEN"' in readme  # the endpoint's real header
    # ... and says what `make test` runs.
    make_test = subprocess.run(
        ["make", "-n", "-C", str(REPO), "test"], capture_output=True, text=True, check=True
    )
    for tool in ("ruff", "lint-imports", "mypy", "mkdocs build --strict", "pytest"):
        assert tool in make_test.stdout, f"make test no longer runs {tool}: update README's two commands"

    # `make run` itself, from a copy of the checkout, on free ports; its installation is up to date (the
    # virtualenv these tests run in), so the install stamps are not remade.
    shutil.copy2(REPO / "Makefile", demo_root / "Makefile")
    stamps = [arg for stamp in _make_prerequisites(demo_root, "run") for arg in ("-o", stamp)]
    ports = [f"{name}=0" for name in FREE_PORTS]
    demo = start_command(["make", "-C", str(demo_root), *stamps, "run", *ports], {})
    out = demo_root / "demo-secrets"

    def started() -> re.Match[str] | None:
        assert demo.popen.poll() is None, f"make run exited ({demo.popen.returncode})\n{demo.output()}"
        return re.search(r"local endpoint listening on (http://127\.0\.0\.1:\d+)", demo.stderr())

    endpoint = eventually(started, within=60, what="make run's agent to listen").group(1)
    rest = eventually(
        lambda: re.search(r"REST on (http://127\.0\.0\.1:\d+)", demo.stderr()), within=10
    ).group(1)
    probes = "http://" + eventually(
        lambda: re.search(r"probes listening on (127\.0\.0\.1:\d+)", demo.stderr()), within=10
    ).group(1)
    eventually(lambda: _http(f"{probes}/readyz")[0] == 200, within=30, what="make run's agent to be ready")
    assert BANNER in demo.stdout()

    # The files, plain and shaped.
    assert (out / "db-password").read_bytes() == b"demo-password-v2"
    readme_shapes_are_what_the_demo_writes(out)

    # The endpoint, with and without the token.
    token = (out / ".token").read_text().strip()
    assert _http(f"{endpoint}/v1/secrets/db-password", token=token) == (200, b"demo-password-v2")
    assert _http(f"{endpoint}/v1/files/db/url", token=token) == (200, (out / "db" / "url").read_bytes())
    status, body = _http(f"{endpoint}/v1/secrets/db-password")
    assert status == 401
    assert json.loads(body) == {"error": f"missing token: send it in the {TOKEN_HEADER} header"}

    # Rotate a secret and the JSON secret the templates read: every output follows, in one snapshot.
    _add_version(rest, "db-password", "new-password")
    credentials = {"username": "app", "password": "n3w p@ss", "host": "db.demo.internal", "port": 5432}
    _add_version(rest, "db-credentials", json.dumps(credentials))

    url = out / "db" / "url"

    def rotated() -> bool:
        # As the README's loop waits: on the endpoint, which never gets ahead of the files.
        status, body = _http(f"{endpoint}/v1/files/db/url", token=token)
        return status == 200 and b"n3w" in body

    eventually(rotated, within=30, what="the rotation to reach the endpoint", explain=demo.output)
    assert (out / "db-password").read_bytes() == b"new-password"
    assert url.read_bytes() == b"postgresql://app:n3w%20p%40ss@db.demo.internal:5432/payments"
    assert yaml.safe_load((out / "config" / "app.yaml").read_text())["database"]["password"] == "n3w p@ss"
    assert dotenv_values(out / "app.env")["DATABASE_URL"] == (out / "db" / "url").read_text()
    status, body = _http(f"{endpoint}/v1/secrets/db-password?format=json", token=token)
    assert status == 200
    assert json.loads(body) | {"updated": None} == {
        "name": "db-password",
        "version": "3",
        "value": "new-password",
        "encoding": "utf-8",
        "updated": None,
    }
    assert _http(f"{probes}/readyz") == (200, b'{"status": "ready"}')
    assert "Traceback" not in demo.stderr()
