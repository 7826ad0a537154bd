"""The endpoint's token: compared exactly, and resolved from configuration, a file, or generated into one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.config import ServerConfig
from agent.endpoint.token import MAX_TOKEN_FILE_BYTES, TOKEN_FILE_MODE, resolve_token, token_matches
from agent.errors import AgentError
from testing.logs import logged_text
from tests.endpoint.conftest import TOKEN


def test_token_comparison_is_exact() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches("\udcff" + TOKEN, TOKEN)  # any header text, never an exception


def test_generated_token_is_written_0440_atomically(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    output = tmp_path / "out" / "secrets"  # missing: created
    token = resolve_token(ServerConfig(), output)
    path = output / ".token"
    assert path.read_text() == token
    assert stat.S_IMODE(path.stat().st_mode) == TOKEN_FILE_MODE == 0o440
    assert len(token) >= 40
    assert os.listdir(output) == [".token"]  # no temporary file left behind
    assert token not in logged_text(logs)
    # A new start, a new token (replacing the read-only file).
    again = resolve_token(ServerConfig(), output)
    assert again != token
    assert path.read_text() == again


def test_configured_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert resolve_token(ServerConfig(token=TOKEN), tmp_path) == TOKEN
    assert list(tmp_path.iterdir()) == []


def test_token_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(TOKEN + "\n")
    assert resolve_token(ServerConfig(token_file=file), tmp_path / "out") == TOKEN
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"short-secret\n", "at least 16 characters"),
        (b"has a space in the middle\n", "spaces or control characters"),
        (b"\xff\xfe-not-utf8-at-all-0123456789", "not UTF-8"),
    ],
)
def test_bad_token_file_names_the_file_never_the_content(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    file = tmp_path / "token"
    file.write_bytes(content)
    with pytest.raises(AgentError) as caught:
        resolve_token(ServerConfig(token_file=file), tmp_path)
    message = str(caught.value)
    assert str(file) in message
    assert problem in message
    assert content.decode("utf-8", "replace").strip() not in message


def test_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(AgentError, match=r"server\.token_file .*nope: cannot read it"):
        resolve_token(ServerConfig(token_file=missing), tmp_path)


def test_unwritable_output_dir_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        output = blocker / "sub"  # cannot be created even by root
    else:
        output = tmp_path / "ro"
        output.mkdir(mode=0o500)
    with pytest.raises(AgentError, match="cannot write the endpoint token"):
        resolve_token(ServerConfig(), output)


def test_a_link_planted_at_the_token_is_replaced_and_missing_parents_are_0755(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    output = tmp_path / "a" / "b"
    output.mkdir(parents=True)
    (output / ".token").symlink_to(victim)
    token = resolve_token(ServerConfig(), output)
    assert victim.read_bytes() == b"precious"
    assert not (output / ".token").is_symlink()
    assert (output / ".token").read_text() == token

    old_umask = os.umask(0)
    try:
        resolve_token(ServerConfig(), tmp_path / "new" / "out")
    finally:
        os.umask(old_umask)
    for directory in (tmp_path / "new", tmp_path / "new" / "out"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755


def test_a_token_file_that_is_a_fifo_or_huge_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(AgentError, match=r"fifo: cannot read it \(not a regular file\)"):
        resolve_token(ServerConfig(token_file=fifo), tmp_path)
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (MAX_TOKEN_FILE_BYTES + 1))
    with pytest.raises(AgentError, match="larger than"):
        resolve_token(ServerConfig(token_file=huge), tmp_path)
    linked = tmp_path / "linked"  # a mounted Kubernetes Secret is links: followed for a configured file
    (tmp_path / "real").write_text(TOKEN + "\n")
    linked.symlink_to(tmp_path / "real")
    assert resolve_token(ServerConfig(token_file=linked), tmp_path) == TOKEN
