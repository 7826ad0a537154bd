"""``secrets-agent dev`` end to end: a watched ``.env`` file, the outputs of ``run``, the default debounce;
and with no set-up at all, in a folder with only a ``.env`` (every key served into ``./.secrets``, text logs
on a terminal, no project, no tmpfs warning)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from dotenv import dotenv_values

from agent.endpoint.token import TOKEN_HEADER
from tests.e2e.conftest import CANARY, AgentProcess, Agents, eventually, read_file, write_config

EDIT_DEADLINE = 1.0
"""What the issue promises: an edit of ``.env`` is in the outputs within a second."""


def outputs_show(output_dir: Path, db_password: str, api_key: str) -> bool:
    """Both files and the env file hold these values."""
    if read_file(output_dir, "db-password") != db_password.encode():
        return False
    if read_file(output_dir, "api-key") != api_key.encode():
        return False
    env = dotenv_values(output_dir / "app.env") if (output_dir / "app.env").exists() else {}
    return env.get("DB_PASSWORD") == db_password and env.get("API_KEY") == api_key


def wait_for_edit(
    agent: AgentProcess, output_dir: Path, db_password: str, api_key: str, edited: float
) -> float:
    agent.wait_until(
        lambda: outputs_show(output_dir, db_password, api_key),
        within=EDIT_DEADLINE,
        what=f"the edit in the outputs within {EDIT_DEADLINE}s",
    )
    return time.monotonic() - edited


def test_editing_dotenv_updates_the_files_and_the_env_file_within_a_second(
    agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DB_PASSWORD=first-password\nAPI_KEY='first key'\nCANARY={CANARY}\n")
    config = write_config(
        tmp_path / "agent.yaml",
        [
            {"name": "db-password", "ref": "projects/agent-e2e-tests/secrets/db-password"},
            {"name": "api-key", "ref": "projects/agent-e2e-tests/secrets/api-key"},
        ],
        output_dir=str(output_dir),
        env_file="app.env",
    )
    agent = agents.start("dev", "-c", config, "--dotenv", dotenv)
    agent.wait_for_log("dev: serving 3 of 3", within=15)
    assert outputs_show(output_dir, "first-password", "first key")

    # An editor's save: a new file renamed over the old one.
    replacement = tmp_path / ".env.swp"
    replacement.write_text(f"DB_PASSWORD='second # password'\nAPI_KEY='first key'\nCANARY={CANARY}\n")
    edited = time.monotonic()
    os.rename(replacement, dotenv)
    renamed = wait_for_edit(agent, output_dir, "second # password", "first key", edited)

    # A save in place (write over the same inode).
    edited = time.monotonic()
    dotenv.write_text(f'DB_PASSWORD="third\\npassword"\nAPI_KEY=second-key\nCANARY={CANARY}\n')
    in_place = wait_for_edit(agent, output_dir, "third\npassword", "second-key", edited)
    print(f"edit to outputs: rename {renamed:.2f}s, in place {in_place:.2f}s")

    # A key deleted by mistake: its file keeps the last value, with a warning; nothing is removed.
    dotenv.write_text(f"DB_PASSWORD=fourth-password\nCANARY={CANARY}\n")
    agent.wait_until(lambda: read_file(output_dir, "db-password") == b"fourth-password", within=EDIT_DEADLINE)
    warning = agent.wait_for_log("checking api-key failed", severity="WARNING")
    assert "keeping the last known good value" in warning
    assert outputs_show(output_dir, "fourth-password", "second-key")
    assert agent.alive()
    assert agent.stop() == 0


# --------------------------------------------------------------------------------------------------
# No set-up: a folder with only a .env file
# --------------------------------------------------------------------------------------------------

VALUES = {
    "API_KEY": "api-key-value-4c1e9a",
    "DB_PASSWORD": CANARY,
    "SMTP_URL": "smtp://mailer:pw-7731@localhost:2525",
}
"""The .env of the tests below: no value may appear in anything the agent prints."""


def dotenv_text(values: Mapping[str, str]) -> str:
    return "".join(f"{key}='{value}'\n" for key, value in values.items())


def bare_environment() -> dict[str, str]:
    """Nothing configured: no SECRETS_AGENT_* (but free ports), no project, no credentials, no emulator."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECRETS_AGENT_", "GOOGLE_", "CLOUDSDK_", "GIT_"))
        and key != "SECRET_MANAGER_EMULATOR_HOST"
    }
    env["PYTHONUNBUFFERED"] = "1"
    # Parallel runs must not collide on 8730/8731: the only settings given (the banner names the port).
    env["SECRETS_AGENT_SERVER_LISTEN"] = "127.0.0.1:0"
    env["SECRETS_AGENT_PROBES_LISTEN"] = "127.0.0.1:0"
    return env


BANNER = re.compile(
    r"dev: serving (\d+) of (\d+) secrets? from (\S+) in (\S+); endpoint (http://127\.0\.0\.1:\d+) "
    r"\(token in (\S+)\)"
)


@dataclass
class Dev:
    """``secrets-agent dev`` run in ``folder`` (stderr to a file, or to a terminal with ``terminal``)."""

    folder: Path
    terminal: bool = False
    args: tuple[str, ...] = ()
    popen: subprocess.Popen[bytes] = field(init=False)
    _stderr: Path = field(init=False)
    _master: int | None = field(init=False, default=None)
    _seen: bytearray = field(init=False, default_factory=bytearray)

    def __post_init__(self) -> None:
        argv = [sys.executable, "-m", "agent", "dev", *self.args]
        self._stderr = self.folder.parent / f"{self.folder.name}.stderr"
        with open(self._stderr, "wb") as err:
            if self.terminal:
                self._master, slave = pty.openpty()
                stderr: int | IO[bytes] = slave
            else:
                stderr = err
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=stderr,
                env=bare_environment(),
                cwd=self.folder,
            )
        if self.terminal:
            os.close(slave)

    def output(self) -> str:
        """Everything printed so far (the terminal's CR LF line ends as LF)."""
        if self._master is not None:
            while select.select([self._master], [], [], 0)[0]:
                try:
                    chunk = os.read(self._master, 65536)
                except OSError:  # EIO: the agent closed its end
                    break
                if not chunk:
                    break
                self._seen += chunk
        text = self._stderr.read_text(errors="replace") + self._seen.decode(errors="replace")
        return text.replace("\r\n", "\n")

    def lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.strip()]

    def wait_for(self, text: str | re.Pattern[str], within: float = 15.0, after: int = 0) -> str:
        """The first line (of those after the first ``after``) containing ``text``, waiting for it."""

        def matches(line: str) -> bool:
            return bool(text.search(line)) if isinstance(text, re.Pattern) else text in line

        def found() -> str | None:
            line = next((line for line in self.lines()[after:] if matches(line)), None)
            assert line is not None or self.popen.poll() is None, (
                f"dev exited ({self.popen.returncode}):\n{self.output()}"
            )
            return line

        return eventually(found, within, f"dev to print {text!r}", explain=self.output)

    def banner(self, after: int = 0) -> re.Match[str]:
        match = BANNER.search(self.wait_for(BANNER, after=after))
        assert match is not None
        return match

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=15)
        finally:
            self.output()
            if self._master is not None:
                os.close(self._master)
                self._master = None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        if self._master is not None:
            os.close(self._master)
            self._master = None


@pytest.fixture
def devs() -> Iterator[list[Dev]]:
    """The dev processes of a test: killed if still running, and checked for leaked values."""
    started: list[Dev] = []
    try:
        yield started
    finally:
        for dev in started:
            dev.kill()
    for dev in started:
        output = dev.output()
        leaked = [key for key, value in VALUES.items() if value in output]
        assert not leaked, f"the values of {leaked} appeared in what dev printed:\n{output}"


def start_dev(devs: list[Dev], folder: Path, *, terminal: bool = False, args: tuple[str, ...] = ()) -> Dev:
    dev = Dev(folder, terminal=terminal, args=args)
    devs.append(dev)
    return dev


def folder_with_dotenv(tmp_path: Path, values: Mapping[str, str] = VALUES) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / ".env").write_text(dotenv_text(values))
    return folder


def get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={TOKEN_HEADER: token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_dev_in_a_folder_with_only_a_dotenv_serves_every_key_into_dot_secrets(
    devs: list[Dev], tmp_path: Path
) -> None:
    folder = folder_with_dotenv(tmp_path)
    dev = start_dev(devs, folder)
    banner = dev.banner()
    assert banner.group(1, 2, 3, 4, 6) == ("3", "3", ".env", ".secrets", ".secrets/.token")

    out = folder / ".secrets"
    for key, value in VALUES.items():
        assert (out / key).read_bytes() == value.encode()
    token = (out / ".token").read_text().strip()
    for key, value in VALUES.items():
        assert get(f"{banner[5]}/v1/secrets/{key}", token) == (200, value.encode())
    assert get(f"{banner[5]}/v1/secrets/API_KEY", None)[0] == 401
    assert get(f"{banner[5]}/v1/secrets/NOT_IN_THE_FILE", token)[0] == 404
    assert dev.stop() == 0

    printed = dev.lines()
    assert not [line for line in printed if "tmpfs" in line or "memory-backed" in line]
    # Not a terminal: one JSON object per line, as a log collector wants them.
    assert all(json.loads(line) for line in printed)
    assert sorted(p.name for p in folder.iterdir()) == [".env", ".secrets"]


def test_dev_logs_text_on_a_terminal(devs: list[Dev], tmp_path: Path) -> None:
    folder = folder_with_dotenv(tmp_path)
    dev = start_dev(devs, folder, terminal=True)
    line = dev.wait_for("dev: serving 3 of 3 secrets from .env in .secrets; endpoint http://127.0.0.1:")
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO    agent: dev: serving .*", line), line
    assert dev.stop() == 0
    printed = dev.lines()
    assert not [text for text in printed if text.startswith("{")], printed
    assert (folder / ".secrets" / "API_KEY").read_bytes() == VALUES["API_KEY"].encode()


def test_dev_follows_keys_added_changed_and_removed(devs: list[Dev], tmp_path: Path) -> None:
    folder = folder_with_dotenv(tmp_path)
    out, dotenv = folder / ".secrets", folder / ".env"
    dev = start_dev(devs, folder)
    endpoint = dev.banner()[5]
    token = (out / ".token").read_text().strip()

    def served(key: str) -> tuple[int, bytes]:
        return get(f"{endpoint}/v1/secrets/{key}", token)

    # A key added: a new round serves it, on the same address with the same token.
    seen = len(dev.lines())
    dotenv.write_text(dotenv_text({**VALUES, "NEW_KEY": "new-key-value-1"}))
    assert dev.banner(after=seen).group(1, 2, 5) == ("4", "4", endpoint)
    assert (out / "NEW_KEY").read_bytes() == b"new-key-value-1"
    eventually(lambda: served("NEW_KEY") == (200, b"new-key-value-1"), EDIT_DEADLINE, "the new key served")
    assert (out / ".token").read_text().strip() == token

    # A value changed: the file and the endpoint follow.
    dotenv.write_text(dotenv_text({**VALUES, "NEW_KEY": "new-key-value-2"}))
    eventually(lambda: (out / "NEW_KEY").read_bytes() == b"new-key-value-2", EDIT_DEADLINE, "the edit")
    # The files are swapped first, then the endpoint serves the new snapshot: a moment apart.
    eventually(lambda: served("NEW_KEY") == (200, b"new-key-value-2"), EDIT_DEADLINE, "the endpoint")

    # A key removed: the file is the configuration here, so its file and its endpoint entry go.
    seen = len(dev.lines())
    remaining = {key: value for key, value in VALUES.items() if key != "SMTP_URL"}
    dotenv.write_text(dotenv_text({**remaining, "NEW_KEY": "new-key-value-2"}))
    assert dev.banner(after=seen).group(1, 2) == ("3", "3")
    assert not (out / "SMTP_URL").exists()
    eventually(lambda: served("SMTP_URL")[0] == 404, EDIT_DEADLINE, "the removed key gone from the endpoint")
    assert (out / "API_KEY").read_bytes() == VALUES["API_KEY"].encode()
    assert dev.wait_for("dev: the keys of .env changed (removed SMTP_URL)")

    # The file emptied (an editor halfway through a save): what is served stays.
    seen = len(dev.lines())
    dotenv.write_text("")
    dev.wait_for("keeping the last known good value", after=seen)
    assert (out / "API_KEY").read_bytes() == VALUES["API_KEY"].encode()
    dotenv.write_text(dotenv_text({**remaining, "NEW_KEY": "new-key-value-3"}))
    eventually(lambda: (out / "NEW_KEY").read_bytes() == b"new-key-value-3", EDIT_DEADLINE, "the edit")
    assert (out / "API_KEY").read_bytes() == VALUES["API_KEY"].encode()
    assert dev.stop() == 0


def test_an_explicit_configuration_in_dev_serves_only_its_secrets(devs: list[Dev], tmp_path: Path) -> None:
    folder = folder_with_dotenv(tmp_path)
    (folder / "agent.yaml").write_text(
        "secrets:\n  - {name: api-key, ref: projects/my-project/secrets/api}\n"
    )
    dev = start_dev(devs, folder, args=("-c", "agent.yaml"))
    assert dev.banner().group(1, 2, 4) == ("1", "1", ".secrets")
    out = folder / ".secrets"
    assert (out / "api-key").read_bytes() == VALUES["API_KEY"].encode()
    assert not [key for key in VALUES if (out / key).exists()]
    assert dev.stop() == 0


def test_dev_without_a_dotenv_or_secrets_says_what_to_do_and_writes_nothing(
    devs: list[Dev], tmp_path: Path
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    dev = start_dev(devs, folder)
    assert dev.popen.wait(timeout=30) == 1
    assert "no .env file at .env; create it with KEY=value lines" in dev.output()
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dot_secrets_in_a_git_work_tree_gets_one_hint_unless_ignored(devs: list[Dev], tmp_path: Path) -> None:
    folder = folder_with_dotenv(tmp_path)
    subprocess.run(["git", "init", "-q", str(folder)], check=True, env=bare_environment())
    hint = "keep them out of commits: echo '.secrets/' >> .gitignore"

    dev = start_dev(devs, folder)
    dev.banner()
    assert dev.stop() == 0
    assert len([line for line in dev.lines() if hint in line]) == 1

    (folder / ".gitignore").write_text(".secrets/\n")
    again = start_dev(devs, folder)
    again.banner()
    assert again.stop() == 0
    assert not [line for line in again.lines() if "gitignore" in line]
