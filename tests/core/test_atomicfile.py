"""The one atomic single-file write: whole old or whole new, the intended mode, and never through a link."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from agent.core.atomicfile import make_directories, read_regular_file, remove_leftovers, write_atomically


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_file_gets_0600_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        write_atomically(tmp_path / "token", b"abc")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "token").read_bytes() == b"abc"
    assert mode_of(tmp_path / "token") == 0o600


def test_a_replaced_file_keeps_its_mode_unless_one_is_given(tmp_path: Path) -> None:
    target = tmp_path / "record"
    target.write_bytes(b"old")
    target.chmod(0o640)
    write_atomically(target, b"new")
    assert (target.read_bytes(), mode_of(target)) == (b"new", 0o640)
    write_atomically(target, b"newer", mode=0o440)
    assert (target.read_bytes(), mode_of(target)) == (b"newer", 0o440)


def test_a_planted_link_is_replaced_and_its_target_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o644)
    planted = tmp_path / "out" / ".token"
    planted.parent.mkdir()
    planted.symlink_to(victim)

    write_atomically(planted, b"token-value")

    assert victim.read_bytes() == b"precious"
    assert mode_of(victim) == 0o644
    assert not planted.is_symlink()
    assert planted.read_bytes() == b"token-value"
    assert mode_of(planted) == 0o600  # not the victim's 0644


def test_a_failed_replace_leaves_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    in_the_way = tmp_path / "data.json"
    in_the_way.mkdir()  # rename(file, directory) fails
    (in_the_way / "keep").write_bytes(b"x")
    with pytest.raises(OSError):
        write_atomically(in_the_way, b"{}")
    assert (in_the_way / "keep").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_leftover_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "app.env"
    target.write_bytes(b"A=1\n")
    (tmp_path / ".app.env.k2j3h4.tmp").write_bytes(b"half")
    (tmp_path / ".other.env.k2j3h4.tmp").write_bytes(b"not ours")
    (tmp_path / ".app.env.notes").write_bytes(b"not a temporary")
    remove_leftovers(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".app.env.notes",
        ".other.env.k2j3h4.tmp",
        "app.env",
    ]


def test_a_refused_directory_gets_nothing_written(tmp_path: Path) -> None:
    def refuse(info: os.stat_result) -> None:
        raise PermissionError(errno.EPERM, "not ours")

    with pytest.raises(PermissionError):
        write_atomically(tmp_path / "backup", b"value", check_directory=refuse)
    assert list(tmp_path.iterdir()) == []


def test_directories_are_created_with_the_mode_asked_whatever_the_umask(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    existing.chmod(0o711)
    old_umask = os.umask(0)
    try:
        make_directories(existing / "a" / "b", 0o755)
        make_directories(tmp_path / "private" / "c", 0o700)
    finally:
        os.umask(old_umask)
    assert mode_of(existing) == 0o711  # left as it was
    assert (mode_of(existing / "a"), mode_of(existing / "a" / "b")) == (0o755, 0o755)
    assert (mode_of(tmp_path / "private"), mode_of(tmp_path / "private" / "c")) == (0o700, 0o700)


def test_a_file_in_the_way_of_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        make_directories(tmp_path / "file", 0o755)


def test_reading_refuses_links_fifos_and_big_files_without_blocking(tmp_path: Path) -> None:
    ours = tmp_path / "record"
    ours.write_bytes(b"12345")
    (tmp_path / "link").symlink_to(ours)
    os.mkfifo(tmp_path / "fifo")  # no writer: a plain open() would wait forever

    assert read_regular_file(ours, 5) == b"12345"
    assert read_regular_file(tmp_path / "link", 5, follow_links=True) == b"12345"
    for name, code in (("link", errno.ELOOP), ("fifo", errno.EINVAL)):
        with pytest.raises(OSError) as caught:
            read_regular_file(tmp_path / name, 5)
        assert caught.value.errno == code
    with pytest.raises(OSError) as too_big:
        read_regular_file(ours, 4)
    assert too_big.value.errno == errno.EFBIG
    with pytest.raises(OSError) as device:
        read_regular_file("/dev/zero", 1 << 20, follow_links=True)
    assert device.value.errno == errno.EINVAL
