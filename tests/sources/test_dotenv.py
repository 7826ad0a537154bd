"""DotenvSource: values from a real .env file, content-tag versions, and edits seen within a second."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import NOTIFIED_FILE_NAME, SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import crc32c
from agent.errors import PermanentSourceError
from agent.notify.notified import read_notified
from agent.sources import ChangeFeed
from agent.sources.dotenv import DotenvSource, content_version
from tests.e2e.conftest import AgentProcess, agent_environment, data_target, read_file

CANARY = "canary-51d0e-never-print-me"
CHANGE_DEADLINE = 1.0
"""An edit must reach consumers within this many seconds (the issue's promise to developers)."""


def spec(name: str, env: str = "") -> SecretSpec:
    return SecretSpec(
        name=name, ref=parse_ref(f"projects/dev-project/secrets/{name.replace('.', '-')}"), env=env
    )


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def replace_by_rename(path: Path, text: str) -> None:
    """What editors do: write a new file next to it, then rename it over the old one."""
    temporary = path.with_name(path.name + ".swp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return tmp_path / ".env"


async def value(source: DotenvSource, name: str, env: str = "") -> bytes:
    return (await source.fetch(spec(name, env))).data


# --- values ----------------------------------------------------------------------------------------------


async def test_values_are_parsed_like_python_dotenv(env_file: Path) -> None:
    write(
        env_file,
        "# a comment\n"
        "PLAIN=hello world  # trailing comment\n"
        'DOUBLE="a \\"quoted\\" value # not a comment"\n'
        "SINGLE='no $EXPANSION or ${HOME} here'\n"
        'MULTI="line one\nline two"\n'
        "export EXPORTED=yes\n"
        "EMPTY=\n"
        "UNICODE=pässwörd-🔑\n"
        "DOLLAR=${HOME}/literal\n",
    )
    source = DotenvSource(env_file)
    assert await value(source, "plain") == b"hello world"
    assert await value(source, "double") == b'a "quoted" value # not a comment'
    assert await value(source, "single") == b"no $EXPANSION or ${HOME} here"
    assert await value(source, "multi") == b"line one\nline two"
    assert await value(source, "exported") == b"yes"
    assert await value(source, "empty") == b""
    assert await value(source, "unicode") == "pässwörd-🔑".encode()
    # Never expanded from the agent's own environment.
    assert await value(source, "dollar") == b"${HOME}/literal"


async def test_the_env_name_wins_then_the_local_name_verbatim(env_file: Path) -> None:
    write(env_file, "DB_PASSWORD=by-env-name\ndb.password=by-local-name\napi-key=only-local\nCUSTOM=custom\n")
    source = DotenvSource(env_file)
    assert await value(source, "db.password") == b"by-env-name"  # env defaults to DB_PASSWORD
    assert await value(source, "api-key") == b"only-local"  # no API_KEY: falls back to the name
    assert await value(source, "whatever", env="CUSTOM") == b"custom"


async def test_fetched_carries_name_version_and_checksum(env_file: Path) -> None:
    write(env_file, "TOKEN=abc\n")
    fetched = await DotenvSource(env_file).fetch(spec("token"))
    assert (fetched.name, fetched.data, fetched.crc32c) == ("token", b"abc", crc32c(b"abc"))
    assert fetched.version == content_version(b"abc")
    assert re.fullmatch(r"dotenv-[0-9a-f]{16}", fetched.version)
    assert await DotenvSource(env_file).current_version(spec("token")) == fetched.version


def test_content_versions_are_keyed_per_process_never_a_checksum_of_the_value() -> None:
    """A version goes into logs and notifications: a CRC32C (or any unkeyed hash) of a short value there
    would let anyone who reads them guess it offline. Equal within a process, unrelated across processes."""
    value = b"hunter2"
    here = content_version(value)
    assert here == content_version(value)
    assert here != content_version(b"hunter3")
    assert f"{crc32c(value):08x}" not in here
    program = (
        "import sys; from agent.sources.dotenv import content_version as v; print(v(sys.argv[1].encode()))"
    )
    elsewhere = [
        subprocess.run(
            [sys.executable, "-c", program, value.decode()], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert all(re.fullmatch(r"dotenv-[0-9a-f]{16}", version) for version in elsewhere), elsewhere
    assert len({here, *elsewhere}) == 3, "each process draws its own key"


async def test_versions_change_only_when_the_value_changes(env_file: Path) -> None:
    write(env_file, "A=same\nB=before\n")
    source = DotenvSource(env_file)
    a1, b1 = await source.fetch(spec("a")), await source.fetch(spec("b"))
    replace_by_rename(env_file, "# reordered, commented\nB=after\nA=same\n")
    a2, b2 = await source.fetch(spec("a")), await source.fetch(spec("b"))
    assert a2.version == a1.version
    assert a2.same_value(a1)
    assert b2.version != b1.version
    assert b2.data == b"after"


async def test_the_process_environment_is_untouched(env_file: Path) -> None:
    write(env_file, f"SECRETS_AGENT_TEST_ONLY_KEY={CANARY}\nPATH=/nowhere\n")
    before = dict(os.environ)
    source = DotenvSource(env_file)
    assert await value(source, "secrets_agent_test_only_key") == CANARY.encode()
    assert await value(source, "path") == b"/nowhere"
    assert dict(os.environ) == before


# --- errors ----------------------------------------------------------------------------------------------


async def test_a_missing_key_names_the_file_and_key_but_no_value(env_file: Path) -> None:
    write(env_file, f"OTHER={CANARY}\n")
    with pytest.raises(PermanentSourceError) as raised:
        await DotenvSource(env_file).fetch(spec("db.password"))
    error = raised.value
    assert error.code == "NOT_FOUND"
    assert str(env_file) in str(error)
    assert "DB_PASSWORD" in str(error)
    assert "db.password" in str(error)
    assert f"DB_PASSWORD=... to {env_file}" in error.hint
    assert CANARY not in f"{error} {error!r} {error.hint} {''.join(traceback.format_exception(error))}"


async def test_a_key_without_equals_sign_has_no_value(env_file: Path) -> None:
    write(env_file, "BARE\nSET=x\n")
    source = DotenvSource(env_file)
    with pytest.raises(PermanentSourceError, match="key BARE for secret bare has no value") as raised:
        await source.fetch(spec("bare"))
    assert raised.value.code == "NOT_FOUND"
    assert await value(source, "set") == b"x"


async def test_a_missing_file_is_a_clear_permanent_error(env_file: Path) -> None:
    with pytest.raises(PermanentSourceError) as raised:
        await DotenvSource(env_file).fetch(spec("a"))
    assert raised.value.code == "NOT_FOUND"
    assert str(raised.value) == f"{env_file}: NOT_FOUND: the .env file does not exist"
    # Created later: the next fetch finds it.
    write(env_file, "A=now\n")
    assert await value(DotenvSource(env_file), "a") == b"now"


async def test_a_file_that_is_not_utf8_names_the_line_not_the_bytes(env_file: Path) -> None:
    write_bytes(env_file, b"A=fine\nB=caf\xe9-secret\n")
    with pytest.raises(PermanentSourceError) as raised:
        await DotenvSource(env_file).fetch(spec("a"))
    assert raised.value.code == "INVALID_ARGUMENT"
    assert str(raised.value) == f"{env_file}: INVALID_ARGUMENT: not valid UTF-8 (line 2)"
    assert "secret" not in "".join(traceback.format_exception(raised.value))


# --- one read per generation -------------------------------------------------------------------------------


async def test_a_batch_of_fetches_is_served_from_one_read(env_file: Path) -> None:
    write(env_file, "USER=alice\nPASS=pw-a\n")
    source = DotenvSource(env_file)
    assert await value(source, "user") == b"alice"
    stat = os.stat(env_file)
    # Same size, same inode, same mtime: indistinguishable by stat, so only a watcher event re-reads.
    write(env_file, "USER=bobby\nPASS=pw-b\n")
    os.utime(env_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert await value(source, "pass") == b"pw-a"  # the pair stays consistent: alice with pw-a


async def test_a_replaced_file_is_read_again_without_a_watcher(env_file: Path) -> None:
    write(env_file, "A=1\n")
    source = DotenvSource(env_file)
    assert await value(source, "a") == b"1"
    replace_by_rename(env_file, "A=2\n")
    assert await value(source, "a") == b"2"


# --- watching ----------------------------------------------------------------------------------------------


class Watch:
    """Drives ``source.changes()`` in a task and lets a test await the next change with a deadline."""

    def __init__(self, source: DotenvSource) -> None:
        self.iterator: AsyncIterator[frozenset[str] | None] = source.changes()
        self.pending: asyncio.Task[frozenset[str] | None] | None = None

    async def start(self) -> None:
        self.pending = asyncio.ensure_future(anext(self.iterator))
        # One scheduling step (no clock involved) lets the task run until its first real await; by then
        # watchfiles has registered its inotify watch synchronously, so no edit made after this is missed.
        await asyncio.sleep(0)

    async def next_change(self, deadline: float = CHANGE_DEADLINE) -> frozenset[str] | None:
        assert self.pending is not None
        async with asyncio.timeout(deadline):
            change = await self.pending
        self.pending = asyncio.ensure_future(anext(self.iterator))
        return change

    async def stop(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.pending


@pytest.fixture
async def watched(env_file: Path) -> AsyncIterator[tuple[DotenvSource, Watch]]:
    write(env_file, "TOKEN=first\nOTHER=unchanged\n")
    source = DotenvSource(env_file, debounce=0.05)
    watch = Watch(source)
    await watch.start()
    yield source, watch
    await watch.stop()
    await source.close()


def test_dotenv_source_is_a_change_feed(env_file: Path) -> None:
    assert isinstance(DotenvSource(env_file), ChangeFeed)


async def test_an_edit_by_rename_is_reported_within_a_second(
    env_file: Path, watched: tuple[DotenvSource, Watch]
) -> None:
    source, watch = watched
    assert await value(source, "token") == b"first"
    replace_by_rename(env_file, "TOKEN=second\nOTHER=unchanged\n")
    assert await watch.next_change() is None  # None: every secret may have changed
    assert await value(source, "token") == b"second"


async def test_an_in_place_edit_is_reported_and_read_even_if_stat_looks_the_same(
    env_file: Path, watched: tuple[DotenvSource, Watch]
) -> None:
    source, watch = watched
    assert await value(source, "token") == b"first"
    stat = os.stat(env_file)
    write(env_file, "TOKEN=third\nOTHER=unchanged\n")  # same length as "first"
    os.utime(env_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    await watch.next_change()
    assert await value(source, "token") == b"third"


async def test_consecutive_edits_are_each_reported(
    env_file: Path, watched: tuple[DotenvSource, Watch]
) -> None:
    source, watch = watched
    for generation in range(3):
        replace_by_rename(env_file, f"TOKEN=gen-{generation}\n")
        await watch.next_change()
        assert await value(source, "token") == f"gen-{generation}".encode()


async def test_deleting_and_recreating_the_file_is_reported(
    env_file: Path, watched: tuple[DotenvSource, Watch]
) -> None:
    source, watch = watched
    os.unlink(env_file)
    await watch.next_change()
    with pytest.raises(PermanentSourceError, match="does not exist"):
        await source.fetch(spec("token"))
    write(env_file, "TOKEN=back\n")
    await watch.next_change()
    assert await value(source, "token") == b"back"


async def test_watching_a_file_in_a_missing_directory_fails_clearly(tmp_path: Path) -> None:
    source = DotenvSource(tmp_path / "nowhere" / ".env")
    with pytest.raises(PermanentSourceError, match="does not exist") as raised:
        await anext(source.changes())
    assert raised.value.code == "NOT_FOUND"


# --- across restarts of `dev`: real processes ----------------------------------------------------------

ALL = ("alpha", "bravo", "canary")
RECORD_VERSIONS = "import os, sys; open(sys.argv[1], 'a').write(os.environ['SECRETS_AGENT_VERSIONS'] + '\\n')"
"""A notify command that appends the versions it is told about to a file."""


def test_a_dev_restart_keeps_the_versions_the_app_was_told_and_logs_no_checksum(tmp_path: Path) -> None:
    """Content tags are keyed per process, yet a restarted ``dev`` serves unchanged values under the
    versions in the manifest and ``.notified``: nothing is rewritten, the app is not told again, and a
    later notification names the unchanged secret with the version it was told before."""
    dotenv, output_dir, told = tmp_path / ".env", tmp_path / "out", tmp_path / "told.jsonl"
    write(dotenv, f"ALPHA=alpha-value-1\nBRAVO=bravo-value-1\nCANARY={CANARY}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        json.dumps(
            {
                "output_dir": str(output_dir),
                "secrets": [{"name": n, "ref": f"projects/dev-project/secrets/{n}"} for n in ALL],
                "notify": {"command": [sys.executable, "-c", RECORD_VERSIONS, str(told)]},
            }
        )
    )
    env = agent_environment("127.0.0.1:1")  # dev never talks to Secret Manager
    runs: list[AgentProcess] = []

    def start() -> AgentProcess:
        argv = [sys.executable, "-m", "agent", "dev", "-c", str(config), "--dotenv", str(dotenv)]
        agent = AgentProcess(argv, env, tmp_path, tmp_path / f"agent-{len(runs)}")
        runs.append(agent)
        agent.wait_for_log("dev: serving 3 of 3", within=15)
        return agent

    def notifications() -> list[dict[str, str]]:
        return [json.loads(line) for line in told.read_text().splitlines()] if told.exists() else []

    try:
        first = start()
        write(dotenv, f"ALPHA=alpha-value-1\nBRAVO=bravo-value-2\nCANARY={CANARY}\n")
        first.wait_until(lambda: len(notifications()) == 1, what="the app told about the edit")
        told_first = notifications()[0]
        first.wait_until(lambda: read_notified(output_dir) == told_first, what="the .notified record")
        assert first.stop() == 0
        served_first = data_target(output_dir)

        second = start()  # same .env: a new process, a new key
        assert not [m for m in second.messages() if "snapshot updated" in m], "unchanged values rewritten"
        assert data_target(output_dir) == served_first
        assert read_notified(output_dir) == told_first
        write(dotenv, f"ALPHA=alpha-value-2\nBRAVO=bravo-value-2\nCANARY={CANARY}\n")
        second.wait_until(lambda: len(notifications()) == 2, what="the app told about the second edit")
        told_second = notifications()[1]
        assert told_second["bravo"] == told_first["bravo"], "an unchanged value keeps its version"
        assert told_second["alpha"] != told_first["alpha"]
        assert read_file(output_dir, "alpha") == b"alpha-value-2"
        assert second.stop() == 0
    finally:
        for agent in runs:
            if agent.alive():
                agent.popen.kill()
                agent.popen.wait()

    printed = "".join(agent.stdout() + agent.stderr() for agent in runs)
    printed += told.read_text() + (output_dir / NOTIFIED_FILE_NAME).read_text()
    assert CANARY not in printed
    for value in ("alpha-value-1", "alpha-value-2", "bravo-value-1", "bravo-value-2", CANARY):
        assert f"{crc32c(value.encode()):08x}" not in printed, f"the CRC32C of {value} was printed"
