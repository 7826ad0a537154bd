"""Notifiers against real processes and a real HTTP server, and the debouncing/retrying coordinator."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent.core.retry import Backoff
from agent.errors import NotifyError
from agent.notify import procfind
from agent.notify.base import VERSIONS_ENV
from agent.notify.command import OUTPUT_LOG_LIMIT, CommandNotifier
from agent.notify.coordinator import ReloadCoordinator
from agent.notify.http import HttpNotifier, redact_url
from agent.notify.signal import SignalNotifier, compile_process_pattern
from testing.apps import app_argv, find_records, wait_for_records, wait_until

FAST = Backoff(initial=0.01, maximum=0.02)
VERSIONS = {"db-password": "7", "api-key": "2"}


# --------------------------------------------------------------------------------------------------
# Real app processes
# --------------------------------------------------------------------------------------------------


@dataclass
class App:
    process: subprocess.Popen[bytes]
    log: Path
    marker: str

    @property
    def pid(self) -> int:
        return self.process.pid


StartApp = Callable[..., App]


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[StartApp]:
    """Starts reloading_app.py processes (each with a unique marker in its command line); stops them after."""
    started: list[App] = []

    def start(marker: str | None = None, **options: object) -> App:
        marker = marker or f"marker-{uuid.uuid4().hex}"
        log = tmp_path / f"app-{len(started)}.log"
        argv = [*app_argv(log, **options), "--env", marker]  # type: ignore[arg-type]
        app = App(subprocess.Popen(argv), log, marker)
        started.append(app)
        return app

    yield start
    for app in started:
        if app.process.poll() is None:
            app.process.kill()
        app.process.wait(timeout=30)


async def started(app: App) -> App:
    await wait_for_records(app.log, event="start")
    return app


# --------------------------------------------------------------------------------------------------
# SignalNotifier
# --------------------------------------------------------------------------------------------------


async def test_signal_by_pid_file(start_app: StartApp, tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    app = await started(start_app(pid_file=pid_file))
    await SignalNotifier(signal.SIGHUP, pid_file=pid_file).notify(VERSIONS)
    (record,) = await wait_for_records(app.log, event="signal")
    assert record == {"event": "signal", "pid": app.pid, "signal": "SIGHUP"}


async def test_signal_by_command_line_pattern(start_app: StartApp) -> None:
    app = await started(start_app())
    other = await started(start_app())
    await SignalNotifier(signal.SIGUSR1, process=re.escape(app.marker)).notify(VERSIONS)
    await wait_for_records(app.log, event="signal", signal="SIGUSR1")
    assert find_records(other.log, event="signal") == []


async def test_signal_reaches_every_matching_process(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"shared-marker-{uuid.uuid4().hex}"
    apps = [await started(start_app(marker=marker)) for _ in range(2)]
    caplog.set_level(logging.INFO, logger="agent.notify")
    await SignalNotifier(signal.SIGHUP, process=marker).notify(VERSIONS)
    for app in apps:
        await wait_for_records(app.log, event="signal", signal="SIGHUP")
    assert "sent SIGHUP to 2 processes" in caplog.text


async def test_signal_pattern_never_matches_the_agent_itself(start_app: StartApp) -> None:
    app = await started(start_app())
    own = procfind.command_line(os.getpid())
    assert own is not None
    # A pattern that matches both our own command line and the app's.
    pattern = re.compile(f"{re.escape(own)}|{re.escape(app.marker)}")
    found = procfind.matching_pids(pattern)
    # Under pytest-xdist the other workers run with this very command line (as would a second run of the same
    # command): they match, as they should, since they are not us. Apart from them only the app matches.
    twins = [pid for pid in found if pid != app.pid and procfind.command_line(pid) == own]
    assert os.getpid() not in found
    assert found == sorted([app.pid, *twins])


async def test_signal_without_a_matching_process() -> None:
    pattern = f"no-such-process-{uuid.uuid4().hex}"
    with pytest.raises(NotifyError, match=f"SIGHUP: no process matches '{pattern}'"):
        await SignalNotifier(process=pattern).notify(VERSIONS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param("0\n", "does not hold a positive process id", id="zero-would-signal-our-group"),
        pytest.param("-1", "does not hold a positive process id", id="minus-one-would-signal-everything"),
        pytest.param("12ab", "does not hold a positive process id", id="garbage"),
        pytest.param("", "does not hold a positive process id", id="empty"),
    ],
)
async def test_signal_with_a_bad_pid_file(tmp_path: Path, content: str | None, message: str) -> None:
    pid_file = tmp_path / "app.pid"
    if content is not None:
        pid_file.write_text(content)
    with pytest.raises(NotifyError, match=message):
        await SignalNotifier(pid_file=pid_file).notify(VERSIONS)


async def test_signal_refuses_a_pid_file_naming_the_agent(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    pid_file.write_text(str(os.getpid()))
    with pytest.raises(NotifyError, match="names the agent itself"):
        await SignalNotifier(pid_file=pid_file).notify(VERSIONS)


async def test_signal_to_an_exited_process(start_app: StartApp, tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    app = start_app(pid_file=pid_file, exit_with=0)
    app.process.wait(timeout=30)
    with pytest.raises(NotifyError, match=f"pid {app.pid} .* exited before it could be signalled"):
        await SignalNotifier(pid_file=pid_file).notify(VERSIONS)


async def test_signal_pid_file_must_also_match_the_pattern_when_both_are_given(
    start_app: StartApp, tmp_path: Path
) -> None:
    pid_file = tmp_path / "app.pid"
    app = await started(start_app(pid_file=pid_file))
    with pytest.raises(NotifyError, match="stale pid file"):
        await SignalNotifier(pid_file=pid_file, process="some-other-app").notify(VERSIONS)
    assert find_records(app.log, event="signal") == []
    await SignalNotifier(pid_file=pid_file, process=re.escape(app.marker)).notify(VERSIONS)
    await wait_for_records(app.log, event="signal", signal="SIGHUP")


@pytest.mark.parametrize(
    ("text", "message"), [("", "must not be empty"), ("app[", "invalid regular expression 'app\\['")]
)
def test_process_pattern_validation(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_process_pattern(text)


def test_command_line_of_a_fake_proc(tmp_path: Path) -> None:
    for pid, cmdline in {
        "10": b"python\0app.py\0--name\0my app\0",
        "11": b"",
        "12": b"\xff\xfe\0x\0",
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(cmdline)
    (tmp_path / "self").mkdir()
    assert procfind.processes(tmp_path) == [
        procfind.ProcessInfo(10, "python app.py --name my app"),
        procfind.ProcessInfo(12, "\udcff\udcfe x"),
    ]
    assert procfind.matching_pids(re.compile("app.py --name my"), proc=tmp_path, exclude=frozenset()) == [10]


# --------------------------------------------------------------------------------------------------
# HttpNotifier against a real aiohttp server
# --------------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 answering with a scripted list of statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[object] = field(default_factory=list)
    hang: asyncio.Event | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=f"echo {await request.text()}")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/reload", rec.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/reload"
    yield rec
    if rec.hang is not None:
        rec.hang.set()
    await runner.cleanup()


async def test_http_posts_the_versions(receiver: Receiver) -> None:
    await HttpNotifier(receiver.url, timeout=5, retries=0).notify(VERSIONS)
    assert receiver.bodies == [{"event": "secrets-rotated", "versions": VERSIONS}]


async def test_http_retries_after_a_server_error(receiver: Receiver) -> None:
    receiver.statuses = [500]
    await HttpNotifier(receiver.url, timeout=5, retries=2, backoff=FAST).notify(VERSIONS)
    assert len(receiver.bodies) == 2


async def test_http_gives_up_naming_the_url_and_status(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 502]
    url = receiver.url + "?token=hunter2-query-token"
    with pytest.raises(NotifyError) as caught:
        await HttpNotifier(url, timeout=5, retries=2, backoff=FAST).notify(VERSIONS)
    assert len(receiver.bodies) == 3
    message = str(caught.value)
    assert message == f"POST {receiver.url} failed after 3 attempts: HTTP 502"
    assert "hunter2" not in message  # query strings carry tokens


async def test_http_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [307]
    with pytest.raises(NotifyError, match="HTTP 307"):
        await HttpNotifier(receiver.url, timeout=5, retries=0).notify(VERSIONS)


async def test_http_timeout_per_attempt(receiver: Receiver) -> None:
    receiver.hang = asyncio.Event()
    with pytest.raises(NotifyError, match=r"failed after 2 attempts: no answer within 0.2s"):
        await HttpNotifier(receiver.url, timeout=0.2, retries=1, backoff=FAST).notify(VERSIONS)
    assert len(receiver.bodies) == 2


async def test_http_connection_refused() -> None:
    # A port that was just free: bind, note, close.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(
        NotifyError, match=rf"POST http://127.0.0.1:{port}/x failed after 1 attempt: cannot connect"
    ):
        await HttpNotifier(f"http://127.0.0.1:{port}/x", timeout=5, retries=0).notify(VERSIONS)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pass@app.local:8443/hook?token=abc#frag", "https://app.local:8443/hook"),
        ("http://127.0.0.1/reload", "http://127.0.0.1/reload"),
        ("http://[::1]:9000/r", "http://[::1]:9000/r"),
        ("http://host:notaport/", "<invalid URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --------------------------------------------------------------------------------------------------
# CommandNotifier
# --------------------------------------------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_command_gets_the_versions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "versions.json"
    caplog.set_level(logging.INFO, logger="agent.notify")
    code = f"import os; open({str(out)!r}, 'w').write(os.environ[{VERSIONS_ENV!r}]); print('reloaded ok')"
    await CommandNotifier(python(code), timeout=30).notify(VERSIONS)
    assert json.loads(out.read_text()) == VERSIONS
    assert "reloaded ok" in caplog.text


async def test_command_does_not_inherit_the_agents_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint token, the inline configuration, the notify URL and ADMIN_DSN stay with the agent; the
    rest of its environment (a credentials *file* name, other settings) still reaches the command."""
    withheld = {
        "SECRETS_AGENT_SERVER_TOKEN": "token-canary-4f1b2b0b822cd15d",
        "SECRETS_AGENT_CONFIG_YAML": "server: {token: yaml-canary-0b822cd15d6c}",
        "SECRETS_AGENT_NOTIFY_URL": "https://user:url-canary@hooks.example/x",
        "SECRETS_AGENT_NOTIFY_COMMAND": "curl -H 'Authorization: Bearer cmd-canary'",
        "ADMIN_DSN": "postgresql://admin:dsn-canary@db/postgres",
    }
    kept = {"GOOGLE_APPLICATION_CREDENTIALS": "/var/run/adc.json", "SECRETS_AGENT_OUTPUT_DIR": "/secrets"}
    for name, value in {**withheld, **kept}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    await CommandNotifier(python(code), timeout=30).notify(VERSIONS)
    seen = json.loads(out.read_text())
    assert not set(withheld) & set(seen)
    assert {name: seen.get(name) for name in kept} == kept
    assert VERSIONS_ENV in seen


async def test_command_output_is_truncated_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.notify")
    await CommandNotifier(python("print('a' * 10000 + 'END', end='')"), timeout=30).notify(VERSIONS)
    (record,) = [r for r in caplog.records if "output" in r.getMessage()]
    message = record.getMessage()
    assert f"first {OUTPUT_LOG_LIMIT} of 10003 bytes" in message
    assert "a" * OUTPUT_LOG_LIMIT in message
    assert "END" not in message


async def test_command_non_zero_exit() -> None:
    with pytest.raises(NotifyError, match=r"command '.*python.*' exited with status 3"):
        await CommandNotifier(python("import sys; sys.exit(3)"), timeout=30).notify(VERSIONS)


async def test_command_timeout_kills_it_and_what_it_started(tmp_path: Path) -> None:
    grandchild_pid = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(grandchild_pid)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    notifier = CommandNotifier(python(code), timeout=1.0)
    with pytest.raises(NotifyError, match=r"did not finish within 1s; killed"):
        await notifier.notify(VERSIONS)
    pid = int(grandchild_pid.read_text())
    # Killed with its group; it is an orphan of init now, which reaps it.
    await wait_until(lambda: not Path(f"/proc/{pid}").exists() or _is_zombie(pid), what="grandchild gone")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_command_not_found() -> None:
    with pytest.raises(NotifyError, match="command 'no-such-command-xyz' not found"):
        await CommandNotifier(["no-such-command-xyz"], timeout=5).notify(VERSIONS)


# --------------------------------------------------------------------------------------------------
# ReloadCoordinator
# --------------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """A notifier that records calls and fails its first ``failures`` calls (or always)."""

    name: str
    failures: int = 0
    always_fail: bool = False
    calls: list[dict[str, str]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def notify(self, versions: Mapping[str, str]) -> None:
        self.calls.append(dict(versions))
        self.called.set()
        if self.always_fail or len(self.calls) <= self.failures:
            raise NotifyError(f"{self.name} failed on purpose")


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        assert not task.done(), "run() must never end on its own"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def start(coordinator: ReloadCoordinator, running: list[asyncio.Task[None]]) -> ReloadCoordinator:
    running.append(asyncio.create_task(coordinator.run()))
    return coordinator


async def idle(coordinator: ReloadCoordinator) -> None:
    async with asyncio.timeout(20):
        await coordinator.idle()


async def test_burst_of_requests_gives_one_notification_with_the_latest_versions(
    running: list[asyncio.Task[None]],
) -> None:
    recorder = Recorder("rec")
    coordinator = start(ReloadCoordinator([recorder], debounce=0.1, backoff=FAST, max_attempts=3), running)
    for n in range(10):
        coordinator.request({"db": str(n)})
        await asyncio.sleep(0)  # let the coordinator run between requests, as swaps would
    await idle(coordinator)
    assert recorder.calls == [{"db": "9"}]


async def test_requests_after_delivery_notify_again(running: list[asyncio.Task[None]]) -> None:
    recorder = Recorder("rec")
    coordinator = start(ReloadCoordinator([recorder], debounce=0.01, backoff=FAST, max_attempts=3), running)
    coordinator.request({"db": "1"})
    await idle(coordinator)
    coordinator.request({"db": "2"})
    await idle(coordinator)
    assert recorder.calls == [{"db": "1"}, {"db": "2"}]


async def test_failing_notifier_is_retried_alone(running: list[asyncio.Task[None]]) -> None:
    flaky, steady = Recorder("flaky", failures=2), Recorder("steady")
    results: list[tuple[str, bool]] = []
    coordinator = start(
        ReloadCoordinator(
            [flaky, steady],
            debounce=0.01,
            backoff=FAST,
            max_attempts=5,
            on_result=lambda name, ok: results.append((name, ok)),
        ),
        running,
    )
    coordinator.request(VERSIONS)
    await idle(coordinator)
    assert flaky.calls == [VERSIONS] * 3
    assert steady.calls == [VERSIONS]
    assert sorted(results) == [("flaky", False), ("flaky", False), ("flaky", True), ("steady", True)]


async def test_gives_up_after_max_attempts_and_keeps_running(
    running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    broken = Recorder("broken", always_fail=True)
    coordinator = start(ReloadCoordinator([broken], debounce=0.01, backoff=FAST, max_attempts=3), running)
    coordinator.request({"db": "1"})
    await idle(coordinator)
    assert len(broken.calls) == 3
    assert "broken notifier gave up after 3 attempts: broken failed on purpose" in caplog.text
    coordinator.request({"db": "2"})
    await idle(coordinator)
    assert broken.calls[-1] == {"db": "2"}


async def test_new_request_supersedes_pending_retries(running: list[asyncio.Task[None]]) -> None:
    broken = Recorder("broken", failures=1)
    # A retry would wait up to 1000 s; only the new request can bring the second call this soon.
    coordinator = start(
        ReloadCoordinator([broken], debounce=0.01, backoff=Backoff(1000, 1000), max_attempts=3), running
    )
    coordinator.request({"db": "1"})
    async with asyncio.timeout(20):
        await broken.called.wait()
    coordinator.request({"db": "2"})
    await idle(coordinator)
    assert broken.calls == [{"db": "1"}, {"db": "2"}]


async def test_unexpected_exceptions_do_not_stop_the_coordinator(running: list[asyncio.Task[None]]) -> None:
    class Buggy:
        name = "buggy"

        async def notify(self, versions: Mapping[str, str]) -> None:
            raise KeyError("bug")

    def broken_hook(name: str, ok: bool) -> None:
        raise RuntimeError("metrics bug")

    steady = Recorder("steady")
    coordinator = start(
        ReloadCoordinator(
            [Buggy(), steady], debounce=0.01, backoff=FAST, max_attempts=2, on_result=broken_hook
        ),
        running,
    )
    coordinator.request(VERSIONS)
    await idle(coordinator)
    coordinator.request({"db": "3"})
    await idle(coordinator)
    assert steady.calls == [VERSIONS, {"db": "3"}]


async def test_idle_before_any_request_returns_at_once() -> None:
    coordinator = ReloadCoordinator([], debounce=10, backoff=FAST, max_attempts=1)
    await idle(coordinator)


async def test_coordinator_signals_a_real_app_once_per_burst(
    start_app: StartApp, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    app = await started(start_app(directory=secrets_dir, files=["password"]))
    coordinator = start(
        ReloadCoordinator(
            [SignalNotifier(signal.SIGHUP, process=re.escape(app.marker))],
            debounce=0.05,
            backoff=FAST,
            max_attempts=3,
        ),
        running,
    )
    for version in range(1, 6):
        (secrets_dir / "password").write_text(f"v{version}")
        coordinator.request({"password": str(version)})
    await idle(coordinator)
    (reread,) = await wait_for_records(app.log, event="read", signal="SIGHUP")
    assert reread["values"] == {"password": "v5"}
    assert len(find_records(app.log, event="signal")) == 1
