"""What the driver does to the emulator and reads off it, and off this machine: the access counters sampled
in a thread, the quotas set, a rotation made and followed until every agent serves it, the CPU cores busy.

The emulator's admin counters are the record of every call and every RESOURCE_EXHAUSTED: the figures of
the fleet table are differences and peaks of these samples.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from google.cloud import secretmanager_v1

from bench.common import secret_manager_client
from bench.fleet.driver import FleetState, wait_until
from bench.fleet.world import ACCESS, PROJECT, SERVICE_READ_WRITE_PER_MINUTE
from testing.emulator_process import EmulatorProcess


class Counters:
    """The emulator's AccessSecretVersion counts, sampled in a thread: (time, calls, RESOURCE_EXHAUSTED)."""

    def __init__(self, ep: EmulatorProcess, period: float) -> None:
        self.url = f"{ep.admin_url}/counters"
        self.period = period
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> tuple[float, int, int]:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            counters = json.load(response)
        by_code = counters["methods"].get(ACCESS, {})
        return time.monotonic(), int(sum(by_code.values())), int(by_code.get("RESOURCE_EXHAUSTED", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(self.period)

    def __enter__(self) -> Counters:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, start: float, end: float) -> list[tuple[float, int, int]]:
        return [s for s in list(self.samples) if start <= s[0] <= end]

    def peak(self, start: float, end: float, window: float) -> int:
        """Most calls within any ``window`` seconds between ``start`` and ``end`` (sample resolution)."""
        samples = self.between(start, end)
        best, j = 0, 0
        for i, (t, total, _) in enumerate(samples):
            j = max(j, i)
            while j + 1 < len(samples) and samples[j + 1][0] <= t + window:
                j += 1
            best = max(best, samples[j][1] - total)
        return best


def set_quotas(ep: EmulatorProcess, access_per_minute: int) -> None:
    ep.admin(
        "PUT",
        "/faults",
        {
            "quotas": {
                "access_per_minute": access_per_minute,
                "read_per_minute": SERVICE_READ_WRITE_PER_MINUTE,
                "write_per_minute": SERVICE_READ_WRITE_PER_MINUTE,
            }
        },
    )


class Rotator:
    """AddSecretVersion through the official client; returns the new version number and when it started."""

    def __init__(self, ep: EmulatorProcess) -> None:
        self.client = secret_manager_client(ep.grpc_target)
        self.count = 0

    def rotate(self, name: str) -> tuple[int, float]:
        self.count += 1
        started = time.monotonic()
        version = self.client.add_secret_version(
            parent=f"projects/{PROJECT}/secrets/{name}",
            payload=secretmanager_v1.SecretPayload(data=f"rotated-{self.count}".encode()),
        )
        return int(version.name.rsplit("/", 1)[-1]), started

    def close(self) -> None:
        self.client.transport.close()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Rotation:
    """One rotation as the fleet saw it: seconds from just before AddSecretVersion, per agent."""

    served: list[float]
    """Until each agent served the new version (its files swapped)."""
    delivered: list[float]
    """Until the event reached each agent (event mode; empty when polling)."""
    busy_cores: float
    """CPU cores of this machine busy on average from the rotation until the last agent served it: the
    fleet, both emulators and the bench itself share them."""

    @property
    def convergence(self) -> float:
        return max(self.served)


def machine_busy_seconds() -> float:
    """CPU seconds spent so far by every core of this machine, idle and iowait excluded (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def converge(state: FleetState, agents: int, rotator: Rotator, name: str, within: float) -> Rotation:
    """Rotate ``name``; wait until every agent serves the new version."""
    busy_before = machine_busy_seconds()
    version, started = rotator.rotate(name)
    wait_until(lambda: state.served_at(agents, name, version) is not None, within, f"{name}@{version}", state)
    busy = (machine_busy_seconds() - busy_before) / (time.monotonic() - started)
    served = state.served_at(agents, name, version)
    assert served is not None
    return Rotation([t - started for t in served], [t - started for t in state.events_after(started)], busy)


Sample = tuple[float, dict[str, dict[str, int]]]
"""(time, method -> status -> calls) read off the emulator's counters."""


class MethodCounters:
    """Every method's counts by status, sampled in a thread (ListSecrets, AccessSecretVersion, ...)."""

    def __init__(self, ep: EmulatorProcess, period: float) -> None:
        self.url = f"{ep.admin_url}/counters"
        self.period = period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> Sample:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            counters = json.load(response)
        methods = {m: {c: int(n) for c, n in codes.items()} for m, codes in counters["methods"].items()}
        return time.monotonic(), methods

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(self.period)

    def __enter__(self) -> MethodCounters:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def calls(sample: Sample, method: str, code: str | None = None) -> int:
    """Calls of ``method`` in ``sample`` (with status ``code``, or any)."""
    codes = sample[1].get(method, {})
    return codes.get(code, 0) if code is not None else sum(codes.values())


def delta(start: Sample, end: Sample) -> dict[str, dict[str, int]]:
    """method -> status -> calls between two samples (only what moved)."""
    out: dict[str, dict[str, int]] = {}
    for method, codes in end[1].items():
        for code, count in codes.items():
            moved = count - start[1].get(method, {}).get(code, 0)
            if moved:
                out.setdefault(method, {})[code] = moved
    return out


def exhausted(moved: dict[str, dict[str, int]]) -> dict[str, int]:
    """RESOURCE_EXHAUSTED answers per method in ``moved`` (``delta``)."""
    return {m: codes["RESOURCE_EXHAUSTED"] for m, codes in moved.items() if codes.get("RESOURCE_EXHAUSTED")}


class QuotaClock:
    """Quotas per *simulated* minute: the emulator's quota windows last 60 s of wall time, so in a world
    whose time runs ``compression`` times faster the driver sets the quotas again every 60 / compression
    s, which restarts every window (``PUT /faults``). Each window then is one simulated minute and admits
    the scaled quota itself, neither more nor less: no leniency from compression (unlike a quota multiplied
    by it)."""

    def __init__(self, ep: EmulatorProcess, quotas: dict[str, int], compression: float) -> None:
        self.ep = ep
        self.quotas = quotas
        self.period = 60.0 / compression
        self.resets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _set(self) -> None:
        self.ep.admin("PUT", "/faults", {"quotas": self.quotas})
        self.resets += 1

    def _run(self) -> None:
        next_reset = time.monotonic() + self.period
        while not self._stop.wait(max(0.0, next_reset - time.monotonic())):
            self._set()
            next_reset += self.period

    def __enter__(self) -> QuotaClock:
        self._set()
        if self.period < WINDOW:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.ep.admin("PUT", "/faults", {"quotas": False})


WINDOW = 60.0
"""Seconds of wall time one emulator quota window lasts."""
