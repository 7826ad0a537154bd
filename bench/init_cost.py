"""What ``secrets-agent init`` costs a pod start, as a whole process: wall time, CPU time and peak RSS.

The floor, measured in the same run against the same emulator: a fresh Python process that imports the
official asyncio client (``SecretManagerServiceAsyncClient`` over ``grpc.aio.insecure_channel``), makes the
same N AccessSecretVersion calls concurrently, checks the payloads and exits. No agent can start, fetch and
exit for less than the library it builds on; what ``init`` adds (its configuration, CRC32C checks, the
atomic snapshot on tmpfs, the lock, the log lines) is the difference.

The agent runs as the image runs it: the ``secrets-agent`` console script of this environment, ``init
--config FILE`` (the Kubernetes examples' form), a fresh output directory on ``/dev/shm`` every run (an
init container starts on an empty volume), default settings. The emulator runs in a process of its own
(no added latency), seeded with every secret.

Each process is timed from before its fork to its reaping (``time.monotonic``); its CPU time (user +
system) and peak RSS (``ru_maxrss``) come from the rusage ``os.wait4`` returns for exactly that child.
Runs are interleaved (every case once, then again, the order reversed every other round so that neither
side always goes first), ``RUNS`` of each; figures are medians with min-max, and ratios are of medians.
"""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testing.emulator_process import emulator_process, write_seed

PROJECT = "bench-project"
SIZES = (3, 50)
RUNS = 9
TARGET = 1.2
"""Most ``init`` may cost in each of wall time, CPU time and peak RSS, as a ratio to the floor."""
VALUE = "v" * 32
FIGURES = ("wall", "cpu", "rss")
FIGURE_TITLES = {"wall": "wall time", "cpu": "CPU time", "rss": "peak RSS"}

FLOOR_CODE = """
import asyncio, sys
import grpc
from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)

target, project, expected, *ids = sys.argv[1:]

async def main():
    transport = SecretManagerServiceGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(target))
    client = SecretManagerServiceAsyncClient(transport=transport)
    responses = await asyncio.gather(
        *(client.access_secret_version(name=f"projects/{project}/secrets/{i}/versions/latest") for i in ids)
    )
    await client.transport.close()
    if [r.payload.data for r in responses] != [expected.encode()] * len(ids):
        sys.exit("wrong values")

asyncio.run(main())
"""
"""The floor process: ``python -c FLOOR_CODE TARGET PROJECT VALUE ID...``."""

TEARDOWN_CODE = "import sys\nfrom agent.cli import main\nsys.exit(main(sys.argv[1:]))"
"""The agent's ``init`` as a program that returns from ``main`` (an explicit argv) and so exits through the
interpreter's teardown like the floor does: what the agent itself costs, with the one saving that is not in
its code (``agent.cli.exit_now``) taken out. Shown for that split; the target is the program as shipped."""
KINDS = ("agent", "teardown", "floor")


def secret_id(index: int) -> str:
    return f"init-{index:03d}"


@dataclass(frozen=True)
class Sample:
    """One process, start to exit."""

    wall: float
    """Seconds from before the fork to the reaping."""
    cpu: float
    """User + system CPU seconds of the child (all its threads)."""
    rss: float
    """Peak resident set size, MiB (``ru_maxrss``)."""


def run_process(argv: Sequence[str], env: Mapping[str, str], log: Path) -> Sample:
    """Run ``argv`` to its end; its wall time, CPU time and peak RSS. Raises if it did not exit 0."""
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=dict(env))
        # wait4 reaps exactly this child and reports its own rusage (not that of every child so far).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited with {process.returncode}: {log.read_text(errors='replace')}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


@dataclass(frozen=True)
class Case:
    """What one column measures: the agent's ``init`` or the floor, with ``size`` secrets."""

    kind: str
    """``agent`` (as shipped), ``teardown`` (the agent with the interpreter's teardown kept) or ``floor``."""
    size: int


@dataclass(frozen=True)
class Summary:
    """The samples of one case."""

    samples: tuple[Sample, ...]

    def values(self, figure: str) -> list[float]:
        """``figure`` (``wall``, ``cpu`` or ``rss``) of every sample."""
        return [float(getattr(s, figure)) for s in self.samples]

    def median(self, figure: str) -> float:
        return statistics.median(self.values(figure))

    def span(self, figure: str) -> tuple[float, float]:
        return min(self.values(figure)), max(self.values(figure))


@dataclass(frozen=True)
class Result:
    """Every case's samples; ratios are the agent's median over the floor's median, per size and figure."""

    cases: dict[Case, Summary]
    runs: int

    def ratio(self, size: int, figure: str, kind: str = "agent") -> float:
        agent, floor = self.cases[Case(kind, size)], self.cases[Case("floor", size)]
        return agent.median(figure) / floor.median(figure)

    @property
    def worst(self) -> float:
        """The largest ratio of any figure at any size: what the target is checked against."""
        return max(self.ratio(n, f) for n in SIZES for f in FIGURES)

    @property
    def met(self) -> bool:
        return self.worst <= TARGET

    def ratios_text(self) -> str:
        """``3: 1.05x / 1.02x / 1.10x; 50: ...`` (wall / CPU / peak RSS per size)."""
        return "; ".join(f"{n}: " + " / ".join(f"{self.ratio(n, f):.2f}x" for f in FIGURES) for n in SIZES)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="bench-init-", dir=shm if shm.is_dir() else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def agent_program() -> list[str]:
    """The ``secrets-agent`` console script next to this interpreter (what the image's entry point runs);
    ``python -m agent`` if there is none."""
    script = Path(sys.executable).with_name("secrets-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def clean_env() -> dict[str, str]:
    """This process's environment without the agent's own settings or Google credentials."""
    drop = ("SECRETS_AGENT_", "GOOGLE_APPLICATION_CREDENTIALS")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def compile_agent() -> None:
    """Write the agent's bytecode, as the image does at build time (``compileall``): with
    ``PYTHONDONTWRITEBYTECODE`` set, or a module edited since its ``.pyc`` was written, every run would
    compile it again and bill the compiler to the agent."""
    import agent

    for folder in agent.__path__:
        compileall.compile_dir(folder, quiet=1)


def measure(runs: int = RUNS) -> Result:
    compile_agent()
    with scratch_dir() as work:
        seed = write_seed(work / "seed.yaml", PROJECT, {secret_id(i): VALUE for i in range(max(SIZES))})
        configs = {}
        for n in SIZES:
            lines = ["secrets:"] + [f"  - {{name: {secret_id(i)}, ref: {secret_id(i)}}}" for i in range(n)]
            configs[n] = work / f"agent-{n}.yaml"
            configs[n].write_text("\n".join(lines) + "\n")
        env = clean_env()
        with emulator_process(seed) as ep:

            def argv(case: Case, round_: int) -> list[str]:
                if case.kind == "floor":
                    ids = [secret_id(i) for i in range(case.size)]
                    return [sys.executable, "-c", FLOOR_CODE, ep.grpc_target, PROJECT, VALUE, *ids]
                output = work / f"out-{case.kind}-{case.size}-{round_}"
                program = agent_program() if case.kind == "agent" else [sys.executable, "-c", TEARDOWN_CODE]
                return [
                    *program,
                    "init",
                    "--config",
                    str(configs[case.size]),
                    "--endpoint",
                    ep.grpc_target,
                    "--project",
                    PROJECT,
                    "--output-dir",
                    str(output),
                ]

            cases = [Case(kind, n) for n in SIZES for kind in KINDS]
            samples: dict[Case, list[Sample]] = {case: [] for case in cases}
            for case in cases:  # warm up the page cache and the emulator; not counted
                run_process(argv(case, -1), env, work / "warm.log")
            for round_ in range(runs):
                order = cases if round_ % 2 == 0 else cases[::-1]
                for case in order:
                    samples[case].append(run_process(argv(case, round_), env, work / "run.log"))
                    if case.kind != "floor":
                        output = work / f"out-{case.kind}-{case.size}-{round_}"
                        if len(list(output.glob("init-*"))) != case.size:
                            raise RuntimeError(f"init wrote {sorted(os.listdir(output))}")
                        shutil.rmtree(output)
            return Result({case: Summary(tuple(s)) for case, s in samples.items()}, runs)


def _cell(summary: Summary, figure: str) -> str:
    unit, scale = ("MiB", 1.0) if figure == "rss" else ("ms", 1000.0)
    low, high = summary.span(figure)
    return f"{summary.median(figure) * scale:,.0f} ({low * scale:,.0f}-{high * scale:,.0f}) {unit}"


def print_table(result: Result) -> None:
    print(
        f"\n`secrets-agent init --config FILE`, whole process, vs the floor (a Python process importing the "
        f"official async client and making the same calls concurrently); median (min-max) of "
        f"{result.runs} interleaved runs, emulator in its own process"
    )
    print("| secrets | process | wall time | CPU time | peak RSS |")
    print("| ---: | --- | ---: | ---: | ---: |")
    titles = {
        "agent": "agent `init`",
        "teardown": "the same, exiting through the interpreter's teardown",
        "floor": "floor: official async client",
    }
    for n in SIZES:
        for kind in KINDS:
            summary = result.cases[Case(kind, n)]
            print(f"| {n} | {titles[kind]} | " + " | ".join(_cell(summary, f) for f in FIGURES) + " |")
        ratios = " | ".join(f"{result.ratio(n, f):.2f}x" for f in FIGURES)
        print(f"| {n} | **agent / floor** (target <= {TARGET}x) | {ratios} |")
        kept = " | ".join(f"{result.ratio(n, f, 'teardown'):.2f}x" for f in FIGURES)
        print(f"| {n} | with the teardown / floor | {kept} |")


def main(runs: int = RUNS) -> Result:
    result = measure(runs)
    print_table(result)
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else RUNS)
