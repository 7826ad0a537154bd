"""What ``secrets-agent run`` costs a pod while it waits: memory and CPU with 100 secrets.

Four processes run side by side against one emulator (a process of its own, no latency):

* ``python -m agent run`` with 100 secrets, a 60 s poll interval, output on ``/dev/shm``;
* the baseline: a ``python -c`` that imports the libraries ``run`` uses (the Secret Manager client and
  gRPC, aiohttp's web server, prometheus_client, yaml, google_crc32c: not watchfiles or python-dotenv,
  which only ``dev`` loads, as ``tests/test_cli_imports.py`` checks) and then waits: no agent can use less
  than its own libraries;
* for what the libraries cost once they work: the same imports, then the official async client's 100
  AccessSecretVersion calls (all in flight, as the bootstrap makes them) twice (the agent is measured after
  a poll round), then waiting with the event loop and gRPC's threads running, as a sidecar's are. The
  agent's own cost is its distance to this row;
* for scale, an interpreter that imports nothing and waits.

Memory: ``VmHWM`` (peak RSS) and ``VmRSS`` from ``/proc/PID/status`` once the agent has written its
snapshot and again after one poll round. CPU: ``utime + stime`` from ``/proc/PID/stat`` over the same idle
window for each process (no poll is due inside it: the first comes after 54-66 s), then the CPU of one
poll round of all 100 secrets (forced with SIGHUP, which means "refresh now"), amortised over the 60 s
interval.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.init_cost import compile_agent
from testing.emulator_process import EmulatorProcess, emulator_process, stop_process, write_seed

PROJECT = "bench-project"
SECRETS = 100
POLL_INTERVAL_SECONDS = 60
POLL_INTERVAL = f"{POLL_INTERVAL_SECONDS}s"
IDLE_WINDOW = 20.0
"""Seconds of idle CPU measured (the brief: 'e.g. 20 s of idle after bootstrap')."""
READY_TIMEOUT = 60.0
RSS_TARGET = 1.10
DEPENDENCIES = (
    "google.cloud.secretmanager_v1",
    "grpc",
    "aiohttp.web",
    "prometheus_client",
    "yaml",
    "google_crc32c",
)
CLIENT_IN_USE = """
import asyncio, signal, sys
import grpc
from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)

async def main():
    target, project, *ids = sys.argv[1:]
    transport = SecretManagerServiceGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(target))
    client = SecretManagerServiceAsyncClient(transport=transport)
    names = [f"projects/{project}/secrets/{i}/versions/latest" for i in ids]
    for _ in range(2):  # the bootstrap, and the poll round the agent is measured after
        await asyncio.gather(*(client.access_secret_version(name=name) for name in names))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
"""After the imports: the official client's calls for every secret, twice; then an idle loop until SIGTERM."""
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def secret_id(index: int) -> str:
    return f"idle-{index:03d}"


# --------------------------------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` of ``pid`` in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid`` so far, in nanosecond resolution where the kernel keeps
    scheduler statistics (``/proc/PID/task/TID/schedstat``); else ``utime + stime`` in clock ticks."""
    total_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total_ns += int((task / "schedstat").read_text().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        # The command name (field 2) may contain spaces; what follows its closing parenthesis is fixed.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime: fields 14 and 15
    return total_ns / 1e9


def wakeups(pid: int) -> int:
    """Context switches of every live thread of ``pid`` so far: how often it woke up."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# --------------------------------------------------------------------------------------------------
# The processes
# --------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One long-running process and the file its stderr (or readiness line) goes to."""

    title: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, text: str, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while text not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.title} exited with {self.process.returncode}: {self.log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.title}: no {text!r} within {within:.0f} s: {self.log.read_text()}")
            time.sleep(0.05)


@contextmanager
def started(title: str, argv: Sequence[str], log: Path) -> Iterator[Measured]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Measured(title, process, log)
    finally:
        stop_process(process, grace=15)


def waiting_python(imports: Sequence[str]) -> list[str]:
    """An interpreter that imports ``imports``, says ``ready`` and sleeps until SIGTERM."""
    code = _imports(imports)
    code += "import signal\nprint('ready', flush=True)\nsignal.pause()\n"
    return [sys.executable, "-c", code]


def _imports(names: Sequence[str]) -> str:
    return "".join(f"import {name}\n" for name in names)


def agent_argv(ep: EmulatorProcess, work: Path) -> list[str]:
    config = work / "agent.yaml"
    lines = ["secrets:"] + [f"  - {{name: {secret_id(i)}, ref: {secret_id(i)}}}" for i in range(SECRETS)]
    config.write_text("\n".join(lines) + "\n")
    return [
        sys.executable,
        "-m",
        "agent",
        "run",
        "--config",
        str(config),
        "--endpoint",
        ep.grpc_target,
        "--project",
        PROJECT,
        "--output-dir",
        str(work / "secrets"),
        "--poll-interval",
        POLL_INTERVAL,
        "--log-format",
        "text",
    ]


# --------------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    title: str
    after_bootstrap: dict[str, int]
    after_poll: dict[str, int]
    idle_cpu: float
    """CPU seconds over the idle window."""
    idle_wakeups: int
    """Context switches over the idle window."""
    threads: int


@dataclass(frozen=True)
class Result:
    rows: list[Footprint]
    window: float
    poll_round_cpu: float
    """CPU seconds the agent spent on one poll round of every secret."""

    @property
    def agent(self) -> Footprint:
        return self.rows[-1]

    @property
    def baseline(self) -> Footprint:
        return self.rows[1]

    @property
    def client_in_use(self) -> Footprint:
        return self.rows[2]

    @property
    def rss_ratio(self) -> float:
        return self.agent.after_poll["VmHWM"] / self.baseline.after_poll["VmHWM"]

    @property
    def rss_ratio_to_client(self) -> float:
        """The agent's peak RSS over that of the official client after the same calls."""
        return self.agent.after_poll["VmHWM"] / self.client_in_use.after_poll["VmHWM"]

    @property
    def agent_mib(self) -> float:
        """The agent's peak RSS (VmHWM) after a poll round, MiB: the absolute figure."""
        return self.agent.after_poll["VmHWM"] / 1024

    @property
    def idle_percent(self) -> float:
        return 100 * self.agent.idle_cpu / self.window

    @property
    def amortised_percent(self) -> float:
        return self.idle_percent + 100 * self.poll_round_cpu / POLL_INTERVAL_SECONDS


def poll_round(agent: Measured, ep: EmulatorProcess, idle_rate: float) -> float:
    """Force one check of every secret (SIGHUP); the CPU seconds it took, idle housekeeping excluded."""
    calls_before = ep.access_calls()
    cpu_before, started_at = cpu_seconds(agent.pid), time.monotonic()
    os.kill(agent.pid, signal.SIGHUP)
    deadline = started_at + READY_TIMEOUT
    while ep.access_calls() < calls_before + SECRETS:
        if time.monotonic() > deadline:
            raise RuntimeError("the poll round did not reach the emulator")
        time.sleep(0.01)
    # The last answers are still on their way back: the round is over when the agent's CPU use falls
    # back to its idle rate (gRPC's timer threads never stop completely).
    quiet = 0.2
    last = cpu_seconds(agent.pid)
    while True:
        time.sleep(quiet)
        now = cpu_seconds(agent.pid)
        if now - last <= idle_rate * quiet + 0.001:
            break
        last = now
    return (now - cpu_before) - idle_rate * (time.monotonic() - started_at)


def measure() -> Result:
    compile_agent()  # bytecode as the image has it: compiling a stale module costs memory too
    with tempfile.TemporaryDirectory(prefix="bench-run-", dir=_shm()) as tmp, ExitStack() as stack:
        work = Path(tmp)
        values = {secret_id(i): f"value-{i:03d}-" + "x" * 48 for i in range(SECRETS)}
        ep = stack.enter_context(emulator_process(write_seed(work / "seed.yaml", PROJECT, values)))
        processes = [
            stack.enter_context(started("interpreter only, waiting", waiting_python(()), work / "bare.log")),
            stack.enter_context(
                started(
                    "imports the dependencies (baseline)", waiting_python(DEPENDENCIES), work / "deps.log"
                )
            ),
            stack.enter_context(
                started(
                    f"imports + the official client's {SECRETS} calls, waiting",
                    [sys.executable, "-c", _imports(DEPENDENCIES) + CLIENT_IN_USE, ep.grpc_target, PROJECT]
                    + [secret_id(i) for i in range(SECRETS)],
                    work / "client.log",
                )
            ),
            stack.enter_context(
                started(f"agent `run`, {SECRETS} secrets", agent_argv(ep, work), work / "agent.log")
            ),
        ]
        for p in processes[:3]:
            p.wait_for("ready")
        agent = processes[-1]
        agent.wait_for(f"run: serving {SECRETS} of {SECRETS} secret(s)")
        after_bootstrap = {p.pid: memory_kib(p.pid) for p in processes}
        cpu_start = {p.pid: cpu_seconds(p.pid) for p in processes}
        wakeups_start = {p.pid: wakeups(p.pid) for p in processes}
        time.sleep(IDLE_WINDOW)  # the measurement itself: a window of nothing happening
        idle = {p.pid: cpu_seconds(p.pid) - cpu_start[p.pid] for p in processes}
        woke = {p.pid: wakeups(p.pid) - wakeups_start[p.pid] for p in processes}
        round_cpu = poll_round(agent, ep, idle[agent.pid] / IDLE_WINDOW)
        rows = [
            Footprint(
                p.title,
                after_bootstrap[p.pid],
                memory_kib(p.pid),
                idle[p.pid],
                woke[p.pid],
                thread_count(p.pid),
            )
            for p in processes
        ]
        return Result(rows, IDLE_WINDOW, round_cpu)


def _shm() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def print_tables(result: Result) -> None:
    base, client = result.baseline, result.client_in_use
    print(
        f"\nMemory of `run` with {SECRETS} secrets (MiB; ratio of peak RSS to the import-only baseline, and "
        "to the official client after the same calls)"
    )
    print(
        "| process | VmHWM after bootstrap | VmHWM after a poll | VmRSS now | threads | peak vs baseline "
        "| vs client in use |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in result.rows:
        bootstrap_peak, poll_peak = row.after_bootstrap["VmHWM"] / 1024, row.after_poll["VmHWM"] / 1024
        ratio = row.after_poll["VmHWM"] / base.after_poll["VmHWM"]
        to_client = row.after_poll["VmHWM"] / client.after_poll["VmHWM"]
        print(
            f"| {row.title} | {bootstrap_peak:.1f} | {poll_peak:.1f} | {row.after_poll['VmRSS'] / 1024:.1f} "
            f"| {row.threads} | {ratio:.2f}x | {to_client:.2f}x |"
        )
    in_use = client.after_poll["VmHWM"] / base.after_poll["VmHWM"]
    print(
        f"The agent: {result.agent_mib:.1f} MiB peak (Vault Agent, the anchor: 15-20 MiB); the official "
        f"client's calls alone take the import-only baseline to {in_use:.2f}x"
    )
    print(
        f"\nIdle CPU with {SECRETS} secrets at a {POLL_INTERVAL} interval: CPU seconds over the same "
        f"{result.window:.0f} s window (% of one core)"
    )
    print("| process | CPU ms | % of one core | wake-ups/s | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in result.rows:
        cpu_ratio = f"{row.idle_cpu / base.idle_cpu:.1f}x" if base.idle_cpu > 0 else "n/a (baseline 0)"
        print(
            f"| {row.title} | {row.idle_cpu * 1000:.1f} | {100 * row.idle_cpu / result.window:.3f}% "
            f"| {row.idle_wakeups / result.window:.1f} | {cpu_ratio} |"
        )
    print(
        f"One poll round of {SECRETS} secrets (SIGHUP): {result.poll_round_cpu * 1000:.0f} ms CPU; "
        f"with one round per {POLL_INTERVAL}, idle + polling: "
        f"{result.amortised_percent:.3f}% of one core"
    )


def main() -> Result:
    result = measure()
    print_tables(result)
    return result


if __name__ == "__main__":
    main()
