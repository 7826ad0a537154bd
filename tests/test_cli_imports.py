"""Every command imports only what it uses: measured in a fresh interpreter, as a user runs the program.

``--help`` must not load the Google client (about half a second); ``check-config`` and ``init`` (the init
container on every pod start) must not load the rotation tooling, the secrets API, the webhook or the
emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
NOT_FOR_INIT = (*NEVER_FOR_THE_AGENT, "google.cloud.pubsub_v1")


def modules_of(argv: list[str], env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("MODULES=")]
    assert lines, done.stderr
    loaded: list[str] = json.loads(lines[-1].removeprefix("MODULES="))
    return set(loaded)


def loaded_under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("argv", [["--help"], ["init", "--help"], ["--version"]])
def test_help_loads_no_google_client(argv: list[str]) -> None:
    modules = modules_of(argv)
    assert loaded_under(modules, ("google.cloud", "grpc", *NEVER_FOR_THE_AGENT)) == []


def test_check_config_loads_neither_the_google_client_nor_the_tools(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("project: demo-project\nsecrets:\n  - name: db\n    ref: db-password\n")
    modules = modules_of(["check-config", str(config)])
    assert "agent.config" in modules  # it did run
    assert loaded_under(modules, ("google.cloud", *NOT_FOR_INIT)) == []


def test_init_loads_only_what_init_uses(
    emulator: EmulatorEndpoints, client: secretmanager_v1.SecretManagerServiceClient, tmp_path: Path
) -> None:
    client.create_secret(
        parent="projects/demo-project", secret_id="db-password", secret={"replication": {"automatic": {}}}
    )
    client.add_secret_version(parent="projects/demo-project/secrets/db-password", payload={"data": b"s3cr3t"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    out = tmp_path / "out"

    modules = modules_of(
        [
            "init",
            "--project=demo-project",
            f"--output-dir={out}",
            f"--endpoint={emulator.grpc_target}",
            "--secret=db=db-password",
        ],
        env,
    )

    assert (out / "db").read_bytes() == b"s3cr3t"  # it did the work
    assert "google.cloud.secretmanager_v1" in modules
    assert loaded_under(modules, NOT_FOR_INIT) == []
