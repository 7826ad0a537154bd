"""The soak's readers: threads that check every file snapshot, every endpoint answer and every app reload.

Each observer keeps a ``Tally``: how many reads, which versions it saw (rotations observed), and every read
that was torn, mixed or went back in time (a *rollback*: a secret served at a lower version than the same
observer saw before; the agent writes a snapshot to disk before it serves it, and a restarted agent adopts
what is on disk, so nothing it serves is ever older than what it served).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.world import AgentRunner
from testing.soak_values import (
    ENV_FILE,
    MANIFEST,
    SecretSet,
    Torn,
    Verdict,
    check_answer,
    check_snapshot,
    generation,
)

EXAMPLES = 10
"""Problems kept verbatim per observer (the rest are counted)."""


@dataclass
class Tally:
    """What one observer saw."""

    reads: int = 0
    torn: int = 0
    mixed: int = 0
    split_pairs: int = 0
    rollbacks: int = 0
    vanished: int = 0
    """Reads of a snapshot deleted under the reader (a newer one replaced it): retried, not a failure."""
    seen: set[tuple[str, int]] = field(default_factory=set)
    latest: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, verdict: Verdict, where: str) -> None:
        with self.lock:
            self.reads += 1
            self.torn += bool(verdict.torn)
            self.mixed += bool(verdict.mixed)
            self.split_pairs += bool(verdict.split_pairs)
            for problem in (*verdict.torn, *verdict.mixed):
                self._example(f"{where}: {problem}")
            for name, version in verdict.versions.items():
                self.seen.add((name, version))
                before = self.latest.get(name, 0)
                if version < before:
                    self.rollbacks += 1
                    self._example(f"{where}: {name} went back from version {before} to {version}")
                else:
                    self.latest[name] = version

    def _example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    def rotations_observed(self) -> int:
        """Versions seen beyond each secret's first (version 1, the seed)."""
        with self.lock:
            return sum(1 for _, version in self.seen if version > 1)

    def to_json(self) -> dict[str, object]:
        with self.lock:
            return {
                "reads": self.reads,
                "rotations_observed": sum(1 for _, v in self.seen if v > 1),
                "torn": self.torn,
                "mixed": self.mixed,
                "rollbacks": self.rollbacks,
                "split_pair_reads": self.split_pairs,
                "vanished_retried": self.vanished,
                "examples": list(self.examples),
            }


class Observer(threading.Thread):
    """A daemon thread that calls ``step()`` until ``stop()``; ``pause`` seconds between steps."""

    pause = 0.02

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.tally = Tally()
        self._stop_event = threading.Event()
        self.crash: str | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.step()
                self._stop_event.wait(self.pause)
        except Exception as error:  # reported in the results, never a silent dead reader
            self.crash = f"{type(error).__name__}: {error}"

    def step(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def read_snapshot(
    output_dir: Path, names: tuple[str, ...]
) -> tuple[str, dict[str, bytes], bytes, bytes] | None:
    """(target, files, manifest, env file) read through one resolution of ``..data``; None when that
    snapshot was deleted under us (a newer one replaced it: the README's "retry on ENOENT")."""
    try:
        target = os.readlink(output_dir / "..data")
        base = output_dir / target
        files = {name: (base / name).read_bytes() for name in names}
        return target, files, (base / MANIFEST).read_bytes(), (base / ENV_FILE).read_bytes()
    except FileNotFoundError:
        return None


class FileReader(Observer):
    """Reads the whole snapshot through ``..data`` (every time it changes, and every half second anyway) and
    every top-level file on its own (each must be a whole value; two of them may come from two snapshots)."""

    def __init__(self, output_dir: Path, secrets: SecretSet) -> None:
        super().__init__("soak-file-reader")
        self.output_dir = output_dir
        self.secrets = secrets
        self.snapshots: set[str] = set()
        self.single_files = Tally()
        self._last: tuple[str, float] = ("", 0.0)

    def step(self) -> None:
        try:
            target = os.readlink(self.output_dir / "..data")
        except FileNotFoundError:
            return
        if target != self._last[0] or time.monotonic() - self._last[1] > 0.5:
            read = read_snapshot(self.output_dir, self.secrets.names)
            if read is None:
                with self.tally.lock:
                    self.tally.vanished += 1
            else:
                target, files, manifest, env = read
                self.snapshots.add(target)
                self.tally.record(check_snapshot(files, manifest, env, self.secrets), f"snapshot {target}")
                self._last = (target, time.monotonic())
        for name in self.secrets.names:
            try:
                data = (self.output_dir / name).read_bytes()
            except FileNotFoundError:
                continue  # the symlink is resolved through ..data at each open: a swap in between
            verdict = Verdict()
            try:
                verdict.versions[name] = generation(name, data) + 1
            except Torn as error:
                verdict.torn.append(str(error))
            self.single_files.record(verdict, f"file {name}")


# --------------------------------------------------------------------------------------------------
# The local endpoint
# --------------------------------------------------------------------------------------------------


@dataclass
class Requests:
    """Endpoint requests by outcome."""

    served: int = 0
    failed_restarting: int = 0
    """Failed while the agent was being restarted (killed, starting, not listening yet): expected."""
    failed_up: int = 0
    """Failed while the agent was up (after its first answer, before any kill): must be 0."""
    token_reread: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to_json(self) -> dict[str, object]:
        with self.lock:
            return {
                "served": self.served,
                "failed_while_restarting": self.failed_restarting,
                "failed_while_up": self.failed_up,
                "token_reread": self.token_reread,
                "failures_by_kind": dict(self.failures),
            }


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    version: str | None
    """The X-Secret-Version header."""
    etag: str | None


class EndpointClient:
    """GETs against the agent's endpoint with the token from ``<output>/.token`` (re-read when it changes:
    a restarted agent generates a new one), classifying every failure by the agent's state."""

    def __init__(self, port: int, output_dir: Path, agent: AgentRunner, requests: Requests) -> None:
        self.port = port
        self.token_file = output_dir / ".token"
        self.agent = agent
        self.requests = requests
        self._token = ""

    def token(self, fresh: bool = False) -> str:
        if fresh or not self._token:
            try:
                self._token = self.token_file.read_text().strip()
            except FileNotFoundError:
                self._token = ""
        return self._token

    def get(self, path: str, headers: dict[str, str], timeout: float) -> Answer | None:
        """One request: its answer (200 or 304), or None after a failure (counted)."""
        incarnation = self.agent.current
        number = incarnation.number if incarnation is not None else 0
        token = self.token()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                connection.request("GET", path, headers={"X-Secrets-Agent-Token": token, **headers})
                response = connection.getresponse()
                answer = Answer(
                    response.status,
                    response.read(),
                    response.getheader("X-Secret-Version"),
                    response.getheader("ETag"),
                )
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as error:
            self._failed(type(error).__name__, number)
            return None
        if answer.status in (401, 403):
            if self.token(fresh=True) != token:
                with self.requests.lock:
                    self.requests.token_reread += 1  # a restarted agent's new token: not a failure
                return None
            self._failed(f"HTTP {answer.status}", number)
            return None
        if answer.status not in (200, 304):
            self._failed(f"HTTP {answer.status}", number)
            return None
        current = self.agent.current
        if current is not None and current.number == number and current.first_answer is None:
            current.first_answer = self.agent.clock()
        with self.requests.lock:
            self.requests.served += 1
        return answer

    def _failed(self, kind: str, number: int) -> None:
        current = self.agent.current
        up = (
            current is not None
            and current.number == number
            and current.first_answer is not None
            and current.ended is None
            and not current.killed
            and self.agent.alive()
        )
        with self.requests.lock:
            if up:
                self.requests.failed_up += 1
                kind = f"{kind} (agent up)"
            else:
                self.requests.failed_restarting += 1
            self.requests.failures[kind] = self.requests.failures.get(kind, 0) + 1


class EndpointReader(Observer):
    """``GET /v1/secrets/{name}`` for the secrets in turn; each answer checked against its headers."""

    pause = 0.01

    def __init__(self, client: EndpointClient, secrets: SecretSet, offset: int) -> None:
        super().__init__(f"soak-endpoint-reader-{offset}")
        self.client = client
        self.names = secrets.names
        self._next = offset

    def step(self) -> None:
        name = self.names[self._next % len(self.names)]
        self._next += 1
        answer = self.client.get(f"/v1/secrets/{name}", {}, timeout=10)
        if answer is None:
            time.sleep(0.1)  # the agent is restarting: no busy loop meanwhile
        elif answer.status == 200:
            self.tally.record(check_answer(name, answer.body, answer.version, answer.etag), f"GET {name}")


class LongPollWatcher(Observer):
    """Follows one secret with ``If-None-Match`` + ``?wait=5s``; each wake-up must carry a whole value."""

    pause = 0.0

    def __init__(self, client: EndpointClient, name: str) -> None:
        super().__init__("soak-long-poll")
        self.client = client
        self.name = name
        self.etag = ""
        self.wakeups = 0

    def step(self) -> None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        answer = self.client.get(f"/v1/secrets/{self.name}?wait=5s", headers, timeout=15)
        if answer is None:
            time.sleep(0.05)  # the agent is restarting: no busy loop meanwhile
            return
        if answer.status == 200:
            self.wakeups += 1
            self.etag = answer.etag or ""
            verdict = check_answer(self.name, answer.body, answer.version, answer.etag)
            self.tally.record(verdict, f"long-poll {self.name}")


# --------------------------------------------------------------------------------------------------
# The app's reloads (testing/apps/reloading_app.py logs each read)
# --------------------------------------------------------------------------------------------------


class AppLogReader(Observer):
    """Checks each read the app logged: a whole snapshot (files, manifest and env file agree)."""

    pause = 0.1

    def __init__(self, log: Path, secrets: SecretSet) -> None:
        super().__init__("soak-app-log")
        self.log = log
        self.secrets = secrets
        self.reloads = 0
        self._offset = 0

    def step(self) -> None:
        try:
            with self.log.open("rb") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            record = json.loads(line)
            if record.get("event") != "read":
                continue
            if record.get("signal") == "SIGHUP":
                self.reloads += 1
            values: dict[str, str | None] = record.get("values", {})
            if record.get("snapshot") is None or any(v is None for v in values.values()):
                with self.tally.lock:
                    self.tally.vanished += 1  # the snapshot went away during the read: an app retries
                continue
            files = {name: values[name] or "" for name in self.secrets.names}
            verdict = check_snapshot(files, values[MANIFEST] or "", values[ENV_FILE], self.secrets)
            self.tally.record(verdict, f"app read {record.get('reads')} ({record.get('snapshot')})")


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


class RssSampler(Observer):
    """The agent's VmRSS every half second: (seconds since the start, incarnation, KiB)."""

    pause = 0.5

    def __init__(self, agent: AgentRunner, clock: Callable[[], float]) -> None:
        super().__init__("soak-rss")
        self.agent = agent
        self.clock = clock
        self.samples: list[tuple[float, int, int]] = []

    def step(self) -> None:
        sample = self.agent.rss_kib()
        if sample is not None:
            self.samples.append((self.clock(), *sample))
