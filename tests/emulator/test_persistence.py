"""Persistence (--data) across restarts, seed files (--seed), and the `emulator` command as a real process."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
from google.protobuf import field_mask_pb2

from agent.errors import ConfigError
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorStartError, running_emulator
from tests.conftest import grpc_client

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SEED = REPO / "examples" / "emulator-seed.yaml"
State = secretmanager_v1.SecretVersion.State
CANARY = "canary-value-7f3a9c"


def options(**kwargs: object) -> EmulatorOptions:
    return EmulatorOptions(grpc_port=0, http_port=0, **kwargs)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "emulator.json"


def snapshot(client: secretmanager_v1.SecretManagerServiceClient, parent: str) -> dict[str, object]:
    """Everything a client can see about a project's secrets (but payloads)."""
    secrets = list(client.list_secrets(parent=parent))
    return {
        "secrets": [secretmanager_v1.Secret.to_dict(s) for s in secrets],
        "versions": [
            secretmanager_v1.SecretVersion.to_dict(v)
            for s in secrets
            for v in client.list_secret_versions(parent=s.name)
        ],
    }


# ---- --data ------------------------------------------------------------------------------------


def test_restart_keeps_secrets_versions_states_aliases_etags_and_create_times(data_file: Path) -> None:
    data_file.parent.mkdir()
    parent = "projects/persisted"
    with running_emulator(options(data=data_file)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        secret = client.create_secret(parent=parent, secret_id="db", secret={"labels": {"team": "a"}})
        for value in (b"v1", b"v2", b"\x00binary\xff"):
            client.add_secret_version(parent=secret.name, payload={"data": value})
        client.disable_secret_version(name=f"{secret.name}/versions/2")
        client.destroy_secret_version(name=f"{secret.name}/versions/1")
        client.update_secret(
            secret={"name": secret.name, "version_aliases": {"current": 3}},
            update_mask=field_mask_pb2.FieldMask(paths=["version_aliases"]),
        )
        client.create_secret(parent="projects/persisted/locations/europe-west1", secret_id="eu", secret={})
        before = snapshot(client, parent)
        client.transport.close()

    with running_emulator(options(data=data_file)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        assert snapshot(client, parent) == before
        assert (
            client.access_secret_version(name=f"{secret.name}/versions/current").payload.data
            == b"\x00binary\xff"
        )
        with pytest.raises(gexc.FailedPrecondition):
            client.access_secret_version(name=f"{secret.name}/versions/2")
        assert client.get_secret_version(name=f"{secret.name}/versions/1").state == State.DESTROYED
        assert [s.name for s in client.list_secrets(parent="projects/persisted/locations/europe-west1")] == [
            "projects/persisted/locations/europe-west1/secrets/eu"
        ]
        # Numbering carries on where it stopped.
        added = client.add_secret_version(parent=secret.name, payload={"data": b"v4"})
        assert added.name == f"{secret.name}/versions/4"
        client.transport.close()


def test_data_file_is_owner_only_json_and_rewritten_atomically(data_file: Path) -> None:
    data_file.parent.mkdir()
    with running_emulator(options(data=data_file)) as endpoints:
        assert json.loads(data_file.read_text())["secrets"] == []  # written at start
        client = grpc_client(endpoints.grpc_target)
        secret = client.create_secret(parent="projects/p", secret_id="s", secret={})
        client.add_secret_version(parent=secret.name, payload={"data": CANARY.encode()})
        # Every change is on disk by the time the RPC has answered.
        saved = json.loads(data_file.read_text())
        assert [s["secret"]["name"] for s in saved["secrets"]] == [secret.name]
        assert len(saved["secrets"][0]["versions"]) == 1
        client.transport.close()

    assert stat.S_IMODE(data_file.stat().st_mode) == 0o600
    assert [p.name for p in data_file.parent.iterdir()] == [data_file.name]  # no temp files left


def test_corrupt_data_file_is_a_config_error_naming_the_file(data_file: Path) -> None:
    data_file.parent.mkdir()
    data_file.write_text('{"format": "secrets-agent-emulator/1", "secrets": [{"secret": {"name": "x"}}]}')
    with pytest.raises(ConfigError) as error, running_emulator(options(data=data_file)):
        pass
    assert str(data_file) in str(error.value)
    assert "secrets[0]" in str(error.value)


# ---- --seed ------------------------------------------------------------------------------------


def test_example_seed_loads_and_behaves_like_the_service() -> None:
    with running_emulator(options(seed=EXAMPLE_SEED)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        base = "projects/demo-project/secrets"
        names = [s.name.rsplit("/", 1)[1] for s in client.list_secrets(parent="projects/demo-project")]
        assert names == [
            "api-key",
            "db-credentials",
            "db-password",
            "service-config",
            "stripe-webhook-secret",
            "tls-bundle",
            "tls-key",
        ]
        assert (
            b'"password": "demo p@ss/1"'
            in client.access_secret_version(name=f"{base}/db-credentials/versions/latest").payload.data
        )
        assert client.access_secret_version(name=f"{base}/db-password/versions/latest").payload.data == (
            b"demo-password-v2"
        )
        assert client.access_secret_version(name=f"{base}/db-password/versions/previous").payload.data == (
            b"demo-password-v1"
        )
        assert client.access_secret_version(name=f"{base}/api-key/versions/1").payload.data == b"demo-api-key"
        with pytest.raises(gexc.FailedPrecondition):
            client.access_secret_version(name=f"{base}/stripe-webhook-secret/versions/latest")
        tls = client.access_secret_version(name=f"{base}/tls-key/versions/1").payload.data
        assert tls == b"demo-tls-key-bytes\x00"
        regional = "projects/demo-project/locations/europe-west1/secrets/eu-db-password"
        assert client.access_secret_version(name=f"{regional}/versions/1").payload.data == b"demo-eu-password"
        client.transport.close()


def test_seed_in_json_with_full_names_states_and_aliases(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "secrets": {
                    "projects/other/secrets/tls": {
                        "versions": [{"data_base64": "AAEC"}, {"value": "x", "state": "DESTROYED"}, "y"],
                        "aliases": {"stable": 1},
                        "topics": ["projects/other/topics/events"],
                        "rotation": {"period": "30d"},
                        "annotations": {"owner": "me"},
                    }
                }
            }
        )
    )
    with running_emulator(options(seed=seed)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        name = "projects/other/secrets/tls"
        secret = client.get_secret(name=name)
        assert dict(secret.version_aliases) == {"stable": 1}
        assert [t.name for t in secret.topics] == ["projects/other/topics/events"]
        assert secret.rotation.rotation_period.days == 30
        assert client.access_secret_version(name=f"{name}/versions/stable").payload.data == b"\x00\x01\x02"
        assert client.get_secret_version(name=f"{name}/versions/2").state == State.DESTROYED
        assert client.access_secret_version(name=f"{name}/versions/latest").payload.data == b"y"
        client.transport.close()


def test_seed_does_not_overwrite_what_the_data_file_has(tmp_path: Path, data_file: Path) -> None:
    data_file.parent.mkdir()
    seed = tmp_path / "seed.yaml"
    seed.write_text("project: p\nsecrets:\n  s: first\n")
    with running_emulator(options(seed=seed, data=data_file)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        client.add_secret_version(parent="projects/p/secrets/s", payload={"data": b"changed"})
        client.transport.close()

    seed.write_text("project: p\nsecrets:\n  s: first\n  t: new\n")
    with running_emulator(options(seed=seed, data=data_file)) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        assert (
            client.access_secret_version(name="projects/p/secrets/s/versions/latest").payload.data
            == b"changed"
        )
        assert (
            client.access_secret_version(name="projects/p/secrets/t/versions/latest").payload.data == b"new"
        )
        client.transport.close()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("secrets:\n  s: x\n", "secrets.s: a short secret id needs a top-level 'project'"),
        (f"project: p\nsecrets:\n  db.password: {CANARY}\n", "secrets.db.password: a secret id is 1-255"),
        (f"project: p\nsecrets:\n  s: {{valu: {CANARY}}}\n", "secrets.s: unknown key(s) valu"),
        (
            f"project: p\nsecrets:\n  s: {{versions: [{{value: {CANARY}, state: GONE}}]}}\n",
            "versions[0].state",
        ),
        (
            "project: p\nsecrets:\n  s: {versions: [{data_base64: '%%%'}]}\n",
            "versions[0].data_base64: is not valid",
        ),
        (f"project: p\nsecrets:\n  s: {{value: {CANARY}, aliases: {{x: 5}}}}\n", "secrets.s.aliases"),
        (
            f"project: p\nsecrets:\n  s: {{value: {CANARY}, labels: {{Bad: y}}}}\n",
            'key "Bad" does not conform',
        ),
        (f"project: p\nsecrets:\n  s: {{value: {CANARY}, rotation: {{period: 1h}}}}\n", "at least one topic"),
        ("project: p\nsurprise: 1\n", "unknown top-level key(s) surprise"),
        ("- just\n- a list\n", "must be a mapping"),
        (f"project: p\nsecrets:\n  s: [{CANARY}\n", "invalid YAML"),
    ],
)
def test_bad_seed_is_a_config_error_naming_the_entry_never_the_value(
    tmp_path: Path, content: str, expected: str
) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(content)
    with pytest.raises(ConfigError) as error, running_emulator(options(seed=seed)):
        pass
    message = str(error.value)
    assert expected in message
    assert str(seed) in message
    assert CANARY not in message


def test_every_seed_problem_is_reported_at_once(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("project: p\nsecrets:\n  a.b: x\n  c: {versions: 3}\n  d: {bogus: 1}\n")
    with pytest.raises(ConfigError) as error, running_emulator(options(seed=seed)):
        pass
    assert [p.path.rsplit(": ", 1)[1] for p in error.value.problems] == [
        "secrets.a.b",
        "secrets.c.versions",
        "secrets.d",
    ]


# ---- ports -------------------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_is_a_clear_start_error(busy_port: int) -> None:
    with (
        pytest.raises(EmulatorStartError, match=f"gRPC on 127.0.0.1:{busy_port}"),
        running_emulator(EmulatorOptions(grpc_port=busy_port, http_port=0)),
    ):
        pass
    with (
        pytest.raises(EmulatorStartError, match=f"HTTP on 127.0.0.1:{busy_port}"),
        running_emulator(EmulatorOptions(grpc_port=0, http_port=busy_port)),
    ):
        pass


# ---- the command -------------------------------------------------------------------------------


class Process:
    """A child process whose stderr lines are collected by a thread, so waits have deadlines."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PUBSUB_EMULATOR_HOST", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output so far:\n{''.join(self.seen)}")

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.seen.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code, "".join(self.seen)


def test_emulator_command_serves_the_seed_and_stops_cleanly_on_sigterm() -> None:
    process = Process("emulator", "--grpc-port", "0", "--http-port", "0", "--seed", str(EXAMPLE_SEED))
    try:
        match = process.wait_for(r"listening: gRPC on (\S+), REST on (\S+)")
        target = match[1]
        process.wait_for(rf"SECRET_MANAGER_EMULATOR_HOST={re.escape(target)}")
        client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(target))
        )
        accessed = client.access_secret_version(name="projects/demo-project/secrets/api-key/versions/latest")
        assert accessed.payload.data == b"demo-api-key"
        client.transport.close()
    finally:
        process.proc.send_signal(signal.SIGTERM)
    code, output = process.finish()
    assert code == 0, output
    assert "Traceback" not in output
    assert "demo-api-key" not in output  # no payload is ever logged


def test_emulator_command_with_a_busy_port_exits_1_with_one_line(busy_port: int) -> None:
    code, output = Process("emulator", "--grpc-port", str(busy_port), "--http-port", "0").finish()
    assert code == 1
    assert f"gRPC on 127.0.0.1:{busy_port}" in output
    assert "Traceback" not in output


def test_emulator_command_with_a_bad_seed_exits_2_naming_the_entry(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(f"project: p\nsecrets:\n  bad.id: {CANARY}\n")
    code, output = Process("emulator", "--grpc-port", "0", "--http-port", "0", "--seed", str(seed)).finish()
    assert code == 2
    assert "secrets.bad.id" in output
    assert "Traceback" not in output
    assert CANARY not in output
