"""Every emulator parser is bounded in depth, size and cost: deep filters, deep or huge JSON and YAML, long
numbers and out-of-range fault values get a 4xx (or a ConfigError naming the file), never a 500 or a
traceback; an injected latency never holds up shutdown; and the documented replication filters work."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1

from agent.errors import ConfigError
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.conftest import grpc_client, rest_client

PROJECT = "projects/p"
DEEP_FILTER = "(" * 3000 + "name:a" + ")" * 3000


def call(url: str, method: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def rest(emulator: EmulatorEndpoints) -> Iterator[secretmanager_v1.SecretManagerServiceClient]:
    client = rest_client(emulator.rest_url)
    yield client
    client.transport.close()


# ---- list filters ---------------------------------------------------------------------------------------


def test_a_deep_filter_is_invalid_argument_over_rest(
    rest: secretmanager_v1.SecretManagerServiceClient,
) -> None:
    shallow_enough = "(" * 1000 + "name:a" + ")" * 1000  # what fits in a URL; still far too deep
    with pytest.raises(gexc.BadRequest) as error:
        list(rest.list_secrets(request={"parent": PROJECT, "filter": shallow_enough}))
    assert "Invalid filter" in error.value.message
    assert "nested deeper than 32 levels" in error.value.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (DEEP_FILTER, "nested deeper than 32 levels"),
        ("name:a " * 1000, "more than 500 comparisons"),
        ("x" * 30_000, "longer than 20000 characters"),
        ("name:" + "y" * 19_000, None),  # long but well-formed: simply matches nothing
    ],
)
def test_costly_filters_are_refused_over_grpc(
    emulator: EmulatorEndpoints, text: str, fragment: str | None
) -> None:
    client = grpc_client(emulator.grpc_target)
    try:
        if fragment is None:
            assert list(client.list_secrets(request={"parent": PROJECT, "filter": text})) == []
            return
        with pytest.raises(gexc.InvalidArgument) as error:
            list(client.list_secrets(request={"parent": PROJECT, "filter": text}))
        assert error.value.message.startswith("Invalid filter")
        assert fragment in error.value.message
        assert (
            len(error.value.message) < 400
        )  # quoted in part: the whole filter would not fit in gRPC metadata
    finally:
        client.transport.close()


def test_documented_replication_filters(rest: secretmanager_v1.SecretManagerServiceClient) -> None:
    # https://cloud.google.com/secret-manager/docs/filtering, "Examples".
    rest.create_secret(parent=PROJECT, secret_id="auto", secret={"replication": {"automatic": {}}})
    east = {"user_managed": {"replicas": [{"location": "us-east1"}]}}
    rest.create_secret(parent=PROJECT, secret_id="east", secret={"replication": east})
    europe = {"user_managed": {"replicas": [{"location": "europe-west1"}, {"location": "europe-west4"}]}}
    rest.create_secret(parent=PROJECT, secret_id="europe", secret={"replication": europe})
    rest.create_secret(parent=f"{PROJECT}/locations/us-east1", secret_id="regional", secret={})

    def ids(text: str, parent: str = PROJECT) -> list[str]:
        return [
            s.name.rsplit("/", 1)[1] for s in rest.list_secrets(request={"parent": parent, "filter": text})
        ]

    location = "replication.user_managed.replicas.location"
    assert ids("replication.automatic:*") == ["auto"]
    assert ids(f"{location}:*") == ["east", "europe"]
    assert ids(f"{location}:* AND NOT {location}:(us-central1 OR us-east1)") == ["europe"]
    assert ids(f"{location}=europe-west4") == ["europe"]
    assert ids("NOT replication.automatic:*") == ["east", "europe"]
    assert ids("replication.automatic:*", f"{PROJECT}/locations/us-east1") == []
    with pytest.raises(gexc.BadRequest) as error:
        ids("replication.automatic=yes")
    assert "can only be tested for presence" in error.value.message


# ---- JSON bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("PUT", "/faults", b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
        ("PUT", "/faults", b'{"seed": ' + b"9" * 5000 + b"}", "more than 40 digits"),
        ("POST", "/clock:advance", b'{"seconds": ' + b"9" * 5000 + b"}", "more than 40 digits"),
        ("PUT", "/faults", b'{"faults": {"*": {"latency_ms": 1e308}}}', "milliseconds from 0 to 60000"),
        ("PUT", "/faults", b'{"faults": {"*": {"fail_next": 1000000000000}}}', "from 0 to 1000000"),
        ("PUT", "/faults", b'{"seed": -1}', "from 0 to 2**64 - 1"),
        ("PUT", "/faults", b'{"quotas": {"read_per_minute": 10000000000000}}', "from 0 to 1000000000"),
        ("PUT", "/faults", b'{"faults": {"' + b"k" * 100_000 + b'": {}}}', "unknown method"),
    ],
)
def test_hostile_admin_bodies_get_a_400(
    emulator: EmulatorEndpoints, method: str, path: str, body: bytes, fragment: str
) -> None:
    status, answer = call(emulator.admin_url + path, method, body)
    assert status == 400, answer
    error = answer["error"]
    text = error["message"] + " ".join(p["message"] for p in error["problems"])
    assert fragment in text
    assert len(text) < 1000  # a bounded message, whatever was sent


def test_an_oversized_admin_body_gets_a_413(emulator: EmulatorEndpoints) -> None:
    status, answer = call(emulator.admin_url + "/faults", "PUT", b" " * (300 * 1024) + b"{}")
    assert status == 413
    assert "larger than" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"payload": {"dataCrc32c": ' + b"9" * 5000 + b"}}", "A number has more than 40 digits"),
        (b'{"payload": ' * 5000 + b"{}" + b"}" * 5000, "Nested deeper than 64 levels"),
    ],
)
def test_hostile_rest_bodies_get_googles_400(emulator: EmulatorEndpoints, body: bytes, fragment: str) -> None:
    status, answer = call(f"{emulator.rest_url}/v1/{PROJECT}/secrets/s:addVersion", "POST", body)
    assert status == 400
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert answer["error"]["message"] == f"Invalid JSON payload received. {fragment}."


# ---- seed, data and fault files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("seed.yaml", "secrets: " + "[" * 5000 + "]" * 5000, "nested deeper than 64 levels"),
        ("seed.yaml", "project: p\nsecrets:\n  s: " + "9" * 5000 + "\n", "more than 40 digits"),
        (
            "seed.yaml",
            "project: p\nsecrets:\n  s: {rotation: {next_rotation_time: 2024-13-45}}\n",
            "cannot be read",
        ),
        ("seed.json", '{"secrets": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 64 levels"),
        ("seed.json", '{"project": ' + "9" * 5000 + "}", "more than 40 digits"),
        (
            "seed.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(12)
            ),
            "more than 100 aliases",
        ),
    ],
)
def test_hostile_seed_files_are_config_errors(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    seed = tmp_path / name
    seed.write_text(text)
    with (
        pytest.raises(ConfigError) as error,
        running_emulator(EmulatorOptions(grpc_port=0, http_port=0, seed=seed)),
    ):
        pass
    assert fragment in str(error.value)


def test_a_hostile_data_file_is_a_config_error(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with (
        pytest.raises(ConfigError) as error,
        running_emulator(EmulatorOptions(grpc_port=0, http_port=0, data=data)),
    ):
        pass
    assert "nested deeper than 64 levels" in str(error.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("faults:\n  '*': {latency_ms: 1.0e+308}\n", "milliseconds from 0 to 60000"),
        ("faults: " + "[" * 5000 + "]" * 5000, "nested deeper than 64 levels"),
        ("seed: " + "9" * 5000 + "\n", "more than 40 digits"),
    ],
)
def test_hostile_fault_files_are_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text(text)
    with (
        pytest.raises(ConfigError) as error,
        running_emulator(EmulatorOptions(grpc_port=0, http_port=0, faults=faults)),
    ):
        pass
    assert fragment in str(error.value)


def test_a_port_out_of_range_is_refused_before_listening() -> None:
    with (
        pytest.raises(Exception, match="--grpc-port must be a port number from 0 to 65535"),
        running_emulator(EmulatorOptions(grpc_port=99999, http_port=0)),
    ):
        pass


# ---- shutdown -------------------------------------------------------------------------------------------


def test_shutdown_does_not_wait_for_an_injected_latency() -> None:
    finished = threading.Event()
    outcome: list[object] = []
    stopped = threading.Event()

    def stop_emulator() -> None:
        with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
            status, _ = call(
                endpoints.admin_url + "/faults", "PUT", b'{"faults": {"GetSecret": {"latency_ms": 60000}}}'
            )
            assert status == 200
            # Over REST: the HTTP server's shutdown waits for its handlers (gRPC's cancels after a grace).
            client = rest_client(endpoints.rest_url)

            def slow_call() -> None:
                try:
                    client.get_secret(name=f"{PROJECT}/secrets/slow")
                except gexc.GoogleAPICallError as error:
                    outcome.append(error)
                finished.set()

            caller = threading.Thread(target=slow_call, daemon=True)
            caller.start()
            _wait_for_a_delayed_call(endpoints)
        stopped.set()

    runner = threading.Thread(target=stop_emulator, daemon=True)
    runner.start()
    # Far less than the 60 s latency: the shutdown cut it short instead of waiting it out.
    assert stopped.wait(30), "the emulator's shutdown waited for an injected latency"
    assert finished.wait(30)
    assert outcome
    assert isinstance(outcome[0], gexc.ServiceUnavailable)


def _wait_for_a_delayed_call(endpoints: EmulatorEndpoints) -> None:
    """Poll (with a deadline) until the emulator holds a call in an injected latency."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, state = call(endpoints.admin_url + "/calls", "GET")
        if state["delayed"] >= 1:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the slow call never reached the emulator")
