"""The official Pub/Sub emulator (Google Cloud SDK, Java) for tests: find it, start it, stop it, pull from it.

Started straight from the SDK's launcher script (``platform/pubsub-emulator/bin/cloud-pubsub-emulator``)
rather than through ``gcloud beta emulators pubsub start``, which adds a Python start-up and a wrapper.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER_ENV = "PUBSUB_EMULATOR_BIN"
"""Override: the emulator's launcher script (``.../pubsub-emulator/bin/cloud-pubsub-emulator``)."""
LAUNCHER_IN_SDK = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0

INSTALL_HINT = (
    "The Pub/Sub tests need the official Pub/Sub emulator: install the Google Cloud SDK with its "
    "pubsub-emulator component (`gcloud components install pubsub-emulator`, or the Debian package "
    "google-cloud-cli-pubsub-emulator) and a Java runtime (`apt-get install default-jre-headless`), "
    f"or point {LAUNCHER_ENV} at the emulator's bin/cloud-pubsub-emulator script."
)


class PubSubEmulatorUnavailable(RuntimeError):
    """Emulator or Java missing, or it did not start; the message says what to install or what failed."""


def find_launcher() -> Path:
    """The emulator's launcher script: $PUBSUB_EMULATOR_BIN, else next to the ``gcloud`` on PATH, else
    wherever ``gcloud info`` says the SDK lives."""
    override = os.environ.get(LAUNCHER_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise PubSubEmulatorUnavailable(f"{LAUNCHER_ENV}={override} is not a file. {INSTALL_HINT}")
        return path
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise PubSubEmulatorUnavailable(f"`gcloud` is not on PATH. {INSTALL_HINT}")
    # /usr/bin/gcloud is usually a symlink into <sdk>/bin; resolving it is instant, `gcloud info` takes ~1 s.
    candidates = [Path(gcloud).resolve().parent.parent]
    sdk_root = _sdk_root_from_gcloud(gcloud)
    if sdk_root is not None:
        candidates.append(sdk_root)
    for root in candidates:
        launcher = root / LAUNCHER_IN_SDK
        if launcher.is_file():
            return launcher
    searched = ", ".join(str(root / LAUNCHER_IN_SDK) for root in candidates)
    raise PubSubEmulatorUnavailable(
        f"the pubsub-emulator component is not installed (looked at {searched}). {INSTALL_HINT}"
    )


def _sdk_root_from_gcloud(gcloud: str) -> Path | None:
    try:
        result = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    root = result.stdout.strip()
    return Path(root) if root else None


def find_java() -> str:
    """The java the launcher will run: $JAVA_HOME/bin/java when JAVA_HOME is set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).is_file():
        raise PubSubEmulatorUnavailable(
            f"no Java runtime found (JAVA_HOME or `java` on PATH). {INSTALL_HINT}"
        )
    return java


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the emulator cannot bind port 0 and report it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PubSubEmulator:
    """A running emulator process; ``host_port`` is what PUBSUB_EMULATOR_HOST should be set to."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    startup_seconds: float
    stopped: bool = field(default=False)

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def output(self) -> str:
        """What the emulator printed (stdout and stderr), for failure messages."""
        return (self.workdir / "emulator.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop the whole process group (the launcher execs java, but be sure), then remove the work dir."""
        if self.stopped:
            return
        self.stopped = True
        _kill_group(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
    if process.returncode is None:
        process.wait()


def start_pubsub_emulator(
    host: str = "127.0.0.1", *, timeout: float = START_TIMEOUT_SECONDS
) -> PubSubEmulator:
    """Start the emulator on a free port and return once it answers HTTP. Raises PubSubEmulatorUnavailable."""
    launcher = find_launcher()
    find_java()
    attempts = 3  # a free port can be taken between free_port() and the JVM binding it
    for attempt in range(1, attempts + 1):
        emulator = _spawn(launcher, host, free_port(host))
        try:
            _wait_until_ready(emulator, timeout)
        except _ExitedEarly:
            emulator.stop()
            if attempt == attempts:
                raise PubSubEmulatorUnavailable(
                    f"the Pub/Sub emulator exited during start-up (exit code {emulator.process.returncode})"
                ) from None
            continue
        except BaseException:
            emulator.stop()
            raise
        return emulator
    raise AssertionError("unreachable")


class _ExitedEarly(Exception):
    pass


def _spawn(launcher: Path, host: str, port: int) -> PubSubEmulator:
    workdir = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
    with (workdir / "emulator.log").open("wb") as log:
        process = subprocess.Popen(
            [str(launcher), f"--host={host}", f"--port={port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,  # own process group, so stop() can kill everything it started
        )
    return PubSubEmulator(host, port, process, workdir, startup_seconds=0.0)


def _wait_until_ready(emulator: PubSubEmulator, timeout: float) -> None:
    started = time.monotonic()
    deadline = started + timeout
    url = f"http://{emulator.host}:{emulator.port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    emulator.startup_seconds = time.monotonic() - started
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() >= deadline:
            output = emulator.output()[-2000:]
            raise PubSubEmulatorUnavailable(
                f"the Pub/Sub emulator did not answer on {url} within {timeout:.0f} s; it printed:\n{output}"
            )
        # Waiting on the process (not sleeping) between polls also notices at once when it died.
        try:
            emulator.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise _ExitedEarly


_IDLE_PULL_PAUSE_SECONDS = 0.005
_IDLE_PULL_PAUSE_MAX_SECONDS = 0.05


@dataclass(frozen=True)
class ReceivedMessage:
    """A pulled (and already acknowledged) Pub/Sub message."""

    data: bytes
    attributes: dict[str, str]


@dataclass(frozen=True)
class PubSubChannel:
    """A topic and a pull subscription on it in the Pub/Sub emulator, and the official clients bound to it."""

    host: str
    """``127.0.0.1:PORT`` of the Pub/Sub emulator (the PUBSUB_EMULATOR_HOST value)."""
    project: str
    topic: str
    """Full name, ``projects/P/topics/T`` (what ``Secret.topics[].name`` takes)."""
    subscription: str
    """Full name, ``projects/P/subscriptions/S``."""
    publisher: Any
    """``pubsub_v1.PublisherClient`` bound to the emulator."""
    subscriber: Any
    """``pubsub_v1.SubscriberClient`` bound to the emulator."""

    def pull_until(
        self, done: Callable[[list[ReceivedMessage]], bool], *, timeout: float = 10.0
    ) -> list[ReceivedMessage]:
        """Pull and acknowledge until ``done(all received so far)`` is true; AssertionError at the deadline.

        Synchronous pull with a short server-side wait per call: no sleep, no background thread.
        """
        received: list[ReceivedMessage] = []
        deadline = time.monotonic() + timeout
        idle = _IDLE_PULL_PAUSE_SECONDS
        while not done(received):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                summary = [(m.attributes.get("eventType"), m.attributes.get("secretId")) for m in received]
                raise AssertionError(f"condition not met within {timeout} s; received {summary}")
            batch = self._pull_once(min(remaining, 2.0))
            received.extend(batch)
            if batch:
                idle = _IDLE_PULL_PAUSE_SECONDS
            else:
                # A poll pause, not synchronisation: the emulator answers an empty pull at once instead of
                # waiting for messages, and spinning would take a CPU from the servers under test.
                time.sleep(idle)
                idle = min(idle * 2, _IDLE_PULL_PAUSE_MAX_SECONDS)
        return received

    def pull_count(self, count: int, *, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Pull until at least ``count`` messages arrived."""
        return self.pull_until(lambda received: len(received) >= count, timeout=timeout)

    def _pull_once(self, wait: float) -> list[ReceivedMessage]:
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": 100}, timeout=wait, retry=None
            )
        except exceptions.DeadlineExceeded:
            return []  # nothing arrived during this wait
        messages = list(response.received_messages)
        if messages:
            self.subscriber.acknowledge(
                request={"subscription": self.subscription, "ack_ids": [m.ack_id for m in messages]}
            )
        return [ReceivedMessage(m.message.data, dict(m.message.attributes)) for m in messages]


@contextlib.contextmanager
def open_channel(host: str, project: str = "test-project") -> Iterator[PubSubChannel]:
    """Create a uniquely named topic and subscription on the emulator at ``host``; delete them afterwards.

    PUBSUB_EMULATOR_HOST must already be set to ``host`` (the official clients read it when they are built).
    """
    # The pubsub extra; imported here so conftest loads without it. It ships no type hints (no py.typed).
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    if os.environ.get("PUBSUB_EMULATOR_HOST") != host:
        raise RuntimeError(f"set PUBSUB_EMULATOR_HOST={host} before opening a channel")
    suffix = uuid.uuid4().hex[:12]
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, f"secret-events-{suffix}")
    subscription = subscriber.subscription_path(project, f"secret-events-{suffix}")
    try:
        publisher.create_topic(request={"name": topic})
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": 10}
        )
        yield PubSubChannel(host, project, topic, subscription, publisher, subscriber)
    finally:
        with contextlib.suppress(
            Exception
        ):  # cleanup of a per-test topic must not mask the test's own failure
            subscriber.delete_subscription(request={"subscription": subscription})
            publisher.delete_topic(request={"topic": topic})
        subscriber.close()
        publisher.transport.close()
