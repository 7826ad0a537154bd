"""The real processes and mounts of a soak: the output volume, the Pub/Sub emulator, the app, the agent.

Each class owns one thing and cleans it up; the soak composes them (``run.py``). The Secret Manager
emulator comes from ``testing.emulator_process`` (a process of its own, so its work is not billed to us).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testing.emulator_process import patched_environ, stop_process

PROJECT = "soak-project"
TOPIC = f"projects/{PROJECT}/topics/secret-events"
TMPFS_SIZE = "2m"
"""The output volume: room for a few snapshots of the soak's small secrets (each file takes a 4 KiB page)."""


def log(message: str) -> None:
    """A line of the soak's progress on stderr (stdout is the result)."""
    sys.stderr.write(f"soak: {message}\n")  # one write: lines of several threads never interleave
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------------
# The output volume: a small tmpfs that can be filled up
# --------------------------------------------------------------------------------------------------


class Volume:
    """A small tmpfs mounted for the run (root), or a plain directory on /dev/shm that is never filled.

    Filling /dev/shm instead would take the memory of everything else on the machine, so without a mount
    of its own the soak skips its disk-full phases and says why (``note``).
    """

    def __init__(self, base: Path) -> None:
        self.path = base / "volume"
        self.path.mkdir()
        self.mounted = False
        self.note = ""
        self._ballast = self.path / "ballast"
        if os.geteuid() != 0:
            self.note = "not root: cannot mount a tmpfs, disk-full phases skipped"
        else:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(self.path)],
                capture_output=True,
                text=True,
                check=False,
            )
            self.mounted = result.returncode == 0
            if not self.mounted:
                self.note = f"mount -t tmpfs failed ({result.stderr.strip()}): disk-full phases skipped"
        if not self.mounted:
            shm = Path("/dev/shm")
            self.path.rmdir()
            if shm.is_dir() and os.access(shm, os.W_OK):
                self.path = Path(tempfile.mkdtemp(prefix="soak-volume-", dir=shm))
            else:
                self.path.mkdir()
        self.output_dir = self.path / "secrets"

    @property
    def describe(self) -> str:
        return f"tmpfs of {TMPFS_SIZE} mounted at {self.path}" if self.mounted else self.note

    def fill(self) -> int:
        """Write a ballast file until the volume is full (ENOSPC); returns the bytes it took."""
        written = 0
        chunk = b"\0" * 4096
        fd = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    written += os.write(fd, chunk)  # unbuffered: ENOSPC surfaces here, not at close
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    return written
        finally:
            os.close(fd)

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._ballast.unlink()

    def close(self) -> None:
        self.free()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The Pub/Sub emulator, stopped and restarted on the same port
# --------------------------------------------------------------------------------------------------


class PubSub:
    """The official Pub/Sub emulator (testing/pubsub_emulator.py) with a topic, restartable on its port."""

    def __init__(self, topic: str) -> None:
        from testing import pubsub_emulator

        self._module = pubsub_emulator
        self.topic = topic
        self.current = pubsub_emulator.start_pubsub_emulator()
        self.started = [self.current]
        self.restarts = 0
        self.up = True
        self._create_topic()

    @property
    def host_port(self) -> str:
        return self.current.host_port

    def stop(self) -> None:
        self.up = False
        self.current.stop()

    def restart(self) -> None:
        """Start it again on the same port (empty, as a restarted emulator is) and create the topic."""
        # start_pubsub_emulator() picks a new port; the agent and our emulator know this one.
        launcher = self._module.find_launcher()
        emulator = self._module._spawn(launcher, self.current.host, self.current.port)
        self.started.append(emulator)
        self._module._wait_until_ready(emulator, self._module.START_TIMEOUT_SECONDS)
        self.current = emulator
        self._create_topic()
        self.restarts += 1
        self.up = True

    def _create_topic(self) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        with patched_environ({"PUBSUB_EMULATOR_HOST": self.host_port}):
            publisher = pubsub_v1.PublisherClient()
            try:
                publisher.create_topic(request={"name": self.topic}, timeout=30)
            finally:
                publisher.transport.close()

    def close(self) -> None:
        for emulator in self.started:
            emulator.stop()


# --------------------------------------------------------------------------------------------------
# The app: testing/apps/reloading_app.py, re-reading a whole snapshot on every SIGHUP
# --------------------------------------------------------------------------------------------------


class App:
    def __init__(self, base: Path, output_dir: Path, files: list[str]) -> None:
        from testing.apps import app_argv

        self.log = base / "app.log"
        self.pid_file = base / "app.pid"
        argv = app_argv(self.log, directory=output_dir, files=files, snapshot=True, pid_file=self.pid_file)
        with (base / "app.out").open("wb") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while not self.pid_file.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the app did not start; see {base / 'app.out'}")
            time.sleep(0.02)

    def close(self) -> None:
        stop_process(self.process, grace=5)


# --------------------------------------------------------------------------------------------------
# The agent: `python -m agent run`, SIGKILLed and restarted; restarted too if it ever exits on its own
# --------------------------------------------------------------------------------------------------


@dataclass
class Incarnation:
    """One agent process."""

    number: int
    pid: int
    started: float
    log: Path
    first_answer: float | None = None
    """When its endpoint first answered (set by the readers); None until then."""
    ended: float | None = None
    killed: bool = False
    exit_code: int | None = None


@dataclass
class AgentRunner:
    """Starts the agent, kills it on request and restarts it, like a kubelet with restartPolicy Always.

    A process that exits without being killed is an *unexpected exit*: recorded with its exit code and
    restarted after a second.
    """

    config: Path
    env: dict[str, str]
    logs: Path
    clock: Callable[[], float]
    incarnations: list[Incarnation] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _closing: bool = False

    @property
    def current(self) -> Incarnation | None:
        with self._lock:
            return self.incarnations[-1] if self.incarnations else None

    def alive(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def start(self) -> Incarnation:
        with self._lock:
            number = len(self.incarnations) + 1
            log = self.logs / f"agent-{number}.log"
            argv = [sys.executable, "-m", "agent", "run", "--config", str(self.config)]
            with log.open("wb") as out:
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env
                )
            incarnation = Incarnation(number, self._process.pid, self.clock(), log)
            self.incarnations.append(incarnation)
            return incarnation

    def kill(self) -> bool:
        """SIGKILL the running agent; False if none was running."""
        with self._lock:
            process, incarnation = self._process, self.current
            if process is None or incarnation is None or process.poll() is not None:
                return False
            incarnation.killed = True
            process.send_signal(signal.SIGKILL)
            process.wait()
            incarnation.ended = self.clock()
            incarnation.exit_code = process.returncode
            self._process = None
            return True

    def reap_unexpected(self) -> bool:
        """If the agent exited on its own: record it and return True (the caller restarts it)."""
        with self._lock:
            process, incarnation = self._process, self.current
            if self._closing or process is None or incarnation is None or process.poll() is None:
                return False
            incarnation.ended = self.clock()
            incarnation.exit_code = process.returncode
            tail = incarnation.log.read_text(errors="replace").splitlines()[-5:]
            self.unexpected_exits.append(
                {"incarnation": incarnation.number, "exit_code": process.returncode, "log_tail": tail}
            )
            self._process = None
            return True

    def stop(self) -> int | None:
        """SIGTERM the running agent (it deletes its subscription); its exit code."""
        with self._lock:
            self._closing = True
            process, incarnation = self._process, self.current
        if process is None:
            return None
        stop_process(process, grace=15)
        if incarnation is not None:
            incarnation.ended = self.clock()
            incarnation.exit_code = process.returncode
        return process.returncode

    def rss_kib(self) -> tuple[int, int] | None:
        """(incarnation number, VmRSS in KiB) of the running agent, or None."""
        with self._lock:
            process, incarnation = self._process, self.current
        if process is None or incarnation is None:
            return None
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return incarnation.number, int(line.split()[1])
        return None


def agent_config(
    path: Path,
    *,
    names: list[str],
    project: str,
    output_dir: Path,
    env_file: str,
    pid_file: Path,
    endpoint_port: int,
    probes_port: int,
    topic: str | None,
) -> Path:
    """The agent's configuration for the soak: short intervals so that faults show within seconds."""
    config: dict[str, Any] = {
        "project": project,
        "output_dir": str(output_dir),
        "env_file": env_file,
        "poll_interval": "2s",
        "max_staleness": "15s",
        "timeout": "10s",
        "gcp": {"call_timeout": "2s", "backoff_initial": "200ms", "backoff_max": "2s"},
        "notify": {"pid_file": str(pid_file), "debounce": "200ms"},
        "server": {"listen": f"127.0.0.1:{endpoint_port}"},
        "probes": {"listen": f"127.0.0.1:{probes_port}"},
        "secrets": [{"name": name, "ref": f"projects/{project}/secrets/{name}"} for name in names],
    }
    if topic is not None:
        config["events"] = {"topic": topic, "max_delay": "200ms", "poll_interval": "10s"}
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def agent_environment(emulator_host: str, pubsub_host: str | None) -> dict[str, str]:
    """Ours minus SECRETS_AGENT_* (an unknown one is a config error) and Google credentials."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SECRETS_AGENT_")
        and key not in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "PUBSUB_EMULATOR_HOST")
    }
    env["SECRET_MANAGER_EMULATOR_HOST"] = emulator_host
    if pubsub_host is not None:
        env["PUBSUB_EMULATOR_HOST"] = pubsub_host
    env["PYTHONUNBUFFERED"] = "1"
    return env
