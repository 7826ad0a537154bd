"""Asking the agent how it is: /readyz, /metrics, and the convergence after faults and rotations stop (every
secret at the emulator's latest version in the files and on the endpoint, ready, and read by the app)."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.soak.observers import AppLogReader, EndpointClient, read_snapshot
from bench.soak.world import AgentRunner
from testing.soak_values import SecretSet, check_snapshot, describe

READY_TIMEOUT = 90.0
"""Seconds the agent gets to be ready when the soak starts it first."""


# --------------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------------


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except OSError:
        return 0, b"", {}


def wait_ready(probes: str, agent: AgentRunner) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while http_get(f"{probes}/readyz")[0] != 200:
        current = agent.current
        if not agent.alive() and current is not None:
            tail = current.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the agent exited before it was ready:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent was not ready within {READY_TIMEOUT:.0f} s")
        time.sleep(0.1)


def scrape(probes: str) -> dict[str, float]:
    status, body, _ = http_get(f"{probes}/metrics")
    if status != 200:
        return {}
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[key] = float(value)
    return values


# --------------------------------------------------------------------------------------------------
# Convergence
# --------------------------------------------------------------------------------------------------


@dataclass
class Convergence:
    seconds: float | None = None
    app_seconds: float | None = None
    ready: bool = False
    files: bool = False
    endpoint: bool = False
    app: bool = False
    detail: str = ""


def converged_state(
    expected: dict[str, int],
    output_dir: Path,
    secrets: SecretSet,
    client: EndpointClient,
    probes: str,
) -> tuple[bool, bool, bool, str]:
    """(files, endpoint, ready, what is still missing) against the emulator's latest versions."""
    missing: list[str] = []
    read = read_snapshot(output_dir, secrets.names)
    files_ok = False
    if read is not None:
        _, files, manifest, env = read
        verdict = check_snapshot(files, manifest, env, secrets)
        behind = [
            f"{n}@{verdict.versions.get(n)}<{v}" for n, v in expected.items() if verdict.versions.get(n) != v
        ]
        files_ok = verdict.whole and not behind
        if not files_ok:
            missing.append("files: " + describe(behind or verdict.torn + verdict.mixed, 3))
    endpoint_behind = []
    for name, version in expected.items():
        answer = client.get(f"/v1/secrets/{name}", {}, timeout=10)
        if answer is None or answer.version != str(version):
            endpoint_behind.append(f"{name}@{answer.version if answer else None}<{version}")
    if endpoint_behind:
        missing.append("endpoint: " + describe(endpoint_behind, 3))
    status, body, _ = http_get(f"{probes}/readyz")
    if status != 200:
        missing.append(f"readyz {status}: {body[:200].decode(errors='replace')}")
    return files_ok, not endpoint_behind, status == 200, "; ".join(missing)


def app_has_read(app_reader: AppLogReader, expected: dict[str, int]) -> bool:
    with app_reader.tally.lock:
        latest = dict(app_reader.tally.latest)
    return all(latest.get(name) == version for name, version in expected.items())


def await_convergence(
    expected: dict[str, int],
    output_dir: Path,
    secrets: SecretSet,
    client: EndpointClient,
    probes: str,
    app_reader: AppLogReader,
    within: float,
) -> Convergence:
    result = Convergence()
    started = time.monotonic()
    deadline = started + within
    while time.monotonic() < deadline:
        if result.seconds is None:
            files, endpoint, ready, detail = converged_state(expected, output_dir, secrets, client, probes)
            result.files, result.endpoint, result.ready, result.detail = files, endpoint, ready, detail
            if files and endpoint and ready:
                result.seconds = time.monotonic() - started
        if result.app_seconds is None and app_has_read(app_reader, expected):
            result.app_seconds = time.monotonic() - started
            result.app = True
        if result.seconds is not None and result.app_seconds is not None:
            break
        time.sleep(0.2)
    return result
