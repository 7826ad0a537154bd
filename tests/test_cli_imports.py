"""Every command imports only what it uses: measured in a fresh interpreter, as a user runs the program.

``--help`` and ``check-config`` must not load the Google client or gRPC (about half a second); ``init`` (the
init container on every pod start) must not load what only the sidecar uses: the web server, the
Prometheus client, the file watcher, Pub/Sub, an HTTP client for a notifier it does not have, Jinja2 for
templates it does not have; no command of the agent loads the rotation tooling, the secrets API, the
webhook or the emulator. ``run`` loads the web server and Prometheus, but neither the file watcher nor
Pub/Sub when no events are configured. ``completion`` alone loads shtab, which writes its scripts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.cloud import secretmanager_v1

from agent_emulator.server import EmulatorEndpoints

# Runs the real entry point, then reports every module the process loaded (also after SystemExit).
DRIVER = """
import atexit, json, sys
atexit.register(lambda: print("MODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr))
from agent.cli import main
sys.exit(main(sys.argv[1:]))
"""

NEVER_FOR_THE_AGENT = ("agent.rotation", "agent.secrets", "agent.webhook", "agent_emulator")
GOOGLE_CLIENT = ("google.cloud", "google.api_core", "grpc")
SIDECAR_ONLY = (
    "aiohttp",  # the endpoint's and the probes' server; the HTTP notifier's client
    "prometheus_client",
    "agent.endpoint",
    "agent.observe.metrics",
    "agent.observe.probes",
    "agent.core.serving",
    "agent.notify.http",
    "agent.notify.coordinator",
    "agent.supervisor",
)
DEVELOPMENT_ONLY = ("watchfiles", "dotenv", "agent.sources.dotenv")
EVENTS_ONLY = (
    "google.cloud.pubsub_v1",
    "google.pubsub_v1",
    "agent.sources.pubsub",
    "agent.sources.event_feed",
)
TEMPLATES_ONLY = ("jinja2", "agent.render.templates", "agent.render.sandbox")
COMPLETION_ONLY = ("shtab",)
NOT_FOR_INIT = (
    *NEVER_FOR_THE_AGENT,
    *SIDECAR_ONLY,
    *DEVELOPMENT_ONLY,
    *EVENTS_ONLY,
    *TEMPLATES_ONLY,
    *COMPLETION_ONLY,
)


def modules_in(stderr: str) -> set[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("MODULES=")]
    assert lines, stderr
    loaded: list[str] = json.loads(lines[-1].removeprefix("MODULES="))
    return set(loaded)


def modules_of(argv: list[str], env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return modules_in(done.stderr)


def loaded_under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def agent_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}


@pytest.fixture
def db_password(client: secretmanager_v1.SecretManagerServiceClient) -> str:
    """A secret ``db-password`` in project demo-project; returns its value."""
    client.create_secret(
        parent="projects/demo-project", secret_id="db-password", secret={"replication": {"automatic": {}}}
    )
    client.add_secret_version(parent="projects/demo-project/secrets/db-password", payload={"data": b"s3cr3t"})
    return "s3cr3t"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["init", "--help"], ["run", "--help"], ["completion", "--help"], ["--version"]],
)
def test_help_loads_no_google_client(argv: list[str]) -> None:
    modules = modules_of(argv)
    assert loaded_under(modules, (*GOOGLE_CLIENT, *NOT_FOR_INIT)) == []


@pytest.mark.parametrize("argv", [["init", "--ouput-dir", "x"], ["initt"]])
def test_a_mistyped_command_line_loads_nothing_more(argv: list[str]) -> None:
    modules = modules_of(argv)
    assert "difflib" in modules  # it did look for a suggestion
    assert loaded_under(modules, (*GOOGLE_CLIENT, *NOT_FOR_INIT)) == []


def test_completion_loads_shtab_and_the_parsers_but_no_server() -> None:
    modules = modules_of(["completion", "bash"])
    assert "shtab" in modules
    assert {"agent.rotation.cli", "agent.webhook.cli"} <= modules  # their parsers are in the script
    # (agent.rotation.cli imports agent.secrets.types, whose package imports the Google client today.)
    assert loaded_under(modules, ("agent_emulator", "aiohttp", "agent.endpoint", "agent.app")) == []


def test_check_config_loads_neither_the_google_client_nor_the_tools(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("project: demo-project\nsecrets:\n  - name: db\n    ref: db-password\n")
    modules = modules_of(["check-config", str(config)])
    assert "agent.config" in modules  # it did run
    assert loaded_under(modules, (*GOOGLE_CLIENT, *NOT_FOR_INIT)) == []


def test_init_loads_only_what_init_uses(
    emulator: EmulatorEndpoints, db_password: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    modules = modules_of(
        [
            "init",
            "--project=demo-project",
            f"--output-dir={out}",
            f"--endpoint={emulator.grpc_target}",
            "--secret=db=db-password",
        ],
        agent_env(),
    )

    assert (out / "db").read_bytes() == db_password.encode()  # it did the work
    assert "google.cloud.secretmanager_v1" in modules
    assert loaded_under(modules, NOT_FOR_INIT) == []


def test_init_with_a_notifier_configured_loads_no_http_client(
    emulator: EmulatorEndpoints, db_password: str, tmp_path: Path
) -> None:
    # init never notifies (the app starts after it): the HTTP notifier's aiohttp client stays unloaded.
    config = tmp_path / "agent.yaml"
    config.write_text(
        "project: demo-project\n"
        "notify: {url: 'http://127.0.0.1:9/reload'}\n"
        "secrets:\n  - {name: db, ref: db-password}\n"
    )
    out = tmp_path / "out"
    modules = modules_of(
        ["init", "--config", str(config), f"--output-dir={out}", f"--endpoint={emulator.grpc_target}"],
        agent_env(),
    )
    assert (out / "db").read_bytes() == db_password.encode()
    assert loaded_under(modules, NOT_FOR_INIT) == []


def test_init_with_a_template_loads_jinja(
    emulator: EmulatorEndpoints, db_password: str, tmp_path: Path
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "project: demo-project\n"
        "secrets:\n  - {name: db, ref: db-password}\n"
        "templates:\n  - {name: dsn, file: dsn.txt, text: 'postgres://app:{{ secrets.db.value }}@db/app'}\n"
    )
    out = tmp_path / "out"
    modules = modules_of(
        ["init", "--config", str(config), f"--output-dir={out}", f"--endpoint={emulator.grpc_target}"],
        agent_env(),
    )
    assert (out / "dsn.txt").read_text() == f"postgres://app:{db_password}@db/app"
    assert "jinja2" in modules
    assert loaded_under(modules, (*NEVER_FOR_THE_AGENT, *SIDECAR_ONLY, *DEVELOPMENT_ONLY, *EVENTS_ONLY)) == []


def test_run_loads_no_file_watcher_and_no_pubsub(
    emulator: EmulatorEndpoints, db_password: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [
        "run",
        "--project=demo-project",
        f"--output-dir={out}",
        f"--endpoint={emulator.grpc_target}",
        "--secret=db=db-password",
        "--listen=127.0.0.1:0",
        "--probes-listen=127.0.0.1:0",
        "--log-format=text",
    ]
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", DRIVER, *argv], stderr=stderr, env=agent_env())
    try:
        deadline = time.monotonic() + 60
        while "run: serving 1 of 1 secret(s)" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    modules = modules_in(log.read_text())
    assert (out / "db").read_bytes() == db_password.encode()
    assert {"aiohttp.web", "prometheus_client", "google.cloud.secretmanager_v1"} <= modules
    assert (
        loaded_under(modules, (*NEVER_FOR_THE_AGENT, *DEVELOPMENT_ONLY, *EVENTS_ONLY, *TEMPLATES_ONLY)) == []
    )
