"""The emulator as a process of its own (``python -m agent emulator``), for benchmarks of the agent.

In a thread of the benchmark's process the emulator would share the GIL with the code being measured, so
its own per-call work would be billed to the agent; the real Secret Manager runs elsewhere too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

STARTUP_TIMEOUT = 30.0
_LISTENING = re.compile(r"listening: gRPC on (\S+), REST on (\S+)")


@dataclass(frozen=True)
class EmulatorProcess:
    pid: int
    grpc_target: str
    rest_url: str

    @property
    def admin_url(self) -> str:
        return f"{self.rest_url}/emulator/v1"

    def admin(self, method: str, path: str, body: object = None) -> Any:
        """Call the emulator's admin API (``/emulator/v1``): ``body`` as JSON, the JSON answer back."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.admin_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def access_calls(self) -> int:
        """How many AccessSecretVersion calls the emulator answered so far (admin counters)."""
        counters = self.admin("GET", "/counters")
        return int(sum(counters["methods"].get("AccessSecretVersion", {}).values()))


def write_seed(path: Path, project: str, secrets: Mapping[str, object]) -> Path:
    """An emulator seed file: ``secrets`` maps each secret id to its value or to an entry (value, topics)."""
    path.write_text(yaml.safe_dump({"project": project, "secrets": dict(secrets)}))
    return path


@contextmanager
def emulator_process(seed: Path, faults: Sequence[str] = ()) -> Iterator[EmulatorProcess]:
    """Start the emulator seeded from ``seed`` with ``--fault`` specs; stop it (SIGTERM) afterwards."""
    argv = [sys.executable, "-m", "agent", "emulator", "--grpc-port", "0", "--http-port", "0"]
    argv += ["--seed", str(seed)]
    for fault in faults:
        argv += ["--fault", fault]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield _wait_listening(process, log)
        finally:
            stop_process(process, grace=10)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM a benchmark's child process if it still runs; SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_listening(process: subprocess.Popen[bytes], log: IO[bytes]) -> EmulatorProcess:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read().decode(errors="replace")
        if match := _LISTENING.search(text):
            return EmulatorProcess(process.pid, match.group(1), match.group(2))
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with {process.returncode}: {text}")
        time.sleep(0.05)
    raise RuntimeError(f"the emulator did not start within {STARTUP_TIMEOUT:.0f} s")


@contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the ``with`` block (clients read PUBSUB_EMULATOR_HOST from there), then
    put back what was there before."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
