"""The one atomic single-file write: whole old or whole new, the intended mode, and never through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.core.atomicfile import remove_leftovers, write_atomically


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
