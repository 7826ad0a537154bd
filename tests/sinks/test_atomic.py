"""The atomic directory writer on a real tmpfs: layout, unchanged writes, removals, modes, owners, cleanup."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import SinkError
from agent.sinks.atomic import AtomicDirWriter, FileEntry
from tests.sinks.helpers import internal_entries, read_consistent, snapshot_dirs


def entries(**files: bytes) -> dict[str, FileEntry]:
    return {name.replace("__", "/"): FileEntry(data) for name, data in files.items()}


def test_first_write_builds_the_kubelet_layout(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    assert writer.write({"username": FileEntry(b"alice"), "db/password": FileEntry(b"s3cret", 0o400)})

    (current,) = snapshot_dirs(shm)
    assert os.readlink(shm / "..data") == current
    assert os.readlink(shm / "username") == "..data/username"
    assert os.readlink(shm / "db") == "..data/db"
    assert (shm / "username").read_bytes() == b"alice"
    assert (shm / "db" / "password").read_bytes() == b"s3cret"
    assert stat.S_IMODE((shm / "username").stat().st_mode) == 0o440
    assert stat.S_IMODE((shm / "db" / "password").stat().st_mode) == 0o400
    assert stat.S_IMODE((shm / current).stat().st_mode) == 0o755
    assert internal_entries(shm) == sorted(["..data", current])
    assert writer.current() == {"username": b"alice", "db/password": b"s3cret"}


def test_unchanged_write_touches_nothing(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    files = {"username": FileEntry(b"alice"), "nested/deep/password": FileEntry(b"pw", 0o600)}
    assert writer.write(files)
    before = {
        path: os.lstat(shm / path)
        for path in ("..data", "username", "nested", "username", "nested/deep/password")
    }
    listing = sorted(os.listdir(shm))

    assert writer.write(dict(files)) is False

    for path, info in before.items():
        after = os.lstat(shm / path)
        assert (after.st_ino, after.st_mtime_ns) == (info.st_ino, info.st_mtime_ns), path
    assert sorted(os.listdir(shm)) == listing


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"a": FileEntry(b"1")}, {"a": FileEntry(b"2")}, id="bytes"),
        pytest.param({"a": FileEntry(b"1")}, {"a": FileEntry(b"1", 0o400)}, id="mode"),
        pytest.param({"a": FileEntry(b"1")}, {"a": FileEntry(b"1"), "b": FileEntry(b"")}, id="added"),
        pytest.param({"a": FileEntry(b"1"), "b": FileEntry(b"2")}, {"a": FileEntry(b"1")}, id="removed"),
        pytest.param({"d/a": FileEntry(b"1")}, {"d/b": FileEntry(b"1")}, id="renamed-in-dir"),
        pytest.param({"x": FileEntry(b"1")}, {"x/y": FileEntry(b"1")}, id="file-becomes-dir"),
    ],
)
def test_any_difference_swaps_in_a_whole_new_snapshot(
    shm: Path, first: dict[str, FileEntry], second: dict[str, FileEntry]
) -> None:
    writer = AtomicDirWriter(shm)
    writer.write(first)
    (old,) = snapshot_dirs(shm)

    assert writer.write(second) is True

    (new,) = snapshot_dirs(shm)
    assert new != old
    assert writer.current() == {path: entry.data for path, entry in second.items()}
    for path, entry in second.items():
        assert (shm / path).read_bytes() == entry.data
        assert stat.S_IMODE((shm / path).stat().st_mode) == entry.mode
    visible = {name for name in os.listdir(shm) if not name.startswith("..")}
    assert visible == {path.split("/")[0] for path in second}
    assert internal_entries(shm) == sorted(["..data", new])


def test_removed_file_disappears_and_its_link_is_removed(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    writer.write({"keep": FileEntry(b"k"), "drop": FileEntry(b"d"), "dir/drop": FileEntry(b"x")})
    writer.write({"keep": FileEntry(b"k")})
    assert not os.path.lexists(shm / "drop")
    assert not os.path.lexists(shm / "dir")
    assert (shm / "keep").read_bytes() == b"k"


def test_modes_do_not_depend_on_the_umask(shm: Path) -> None:
    previous = os.umask(0o077)
    try:
        AtomicDirWriter(shm).write({"a/b": FileEntry(b"1", 0o444)})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((shm / "a" / "b").stat().st_mode) == 0o444
    assert stat.S_IMODE((shm / "a").stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="chgrp to a group we are not in needs root")
def test_files_keep_the_group_of_a_setgid_volume_like_a_kubernetes_fsgroup(shm: Path) -> None:
    os.chown(shm, -1, 2345)
    os.chmod(shm, 0o2775)  # what the kubelet does to a volume of a pod with fsGroup 2345

    AtomicDirWriter(shm).write({"db": FileEntry(b"v", 0o440), "tls/key": FileEntry(b"k", 0o440)})

    assert (shm / "db").stat().st_gid == 2345
    assert (shm / "tls" / "key").stat().st_gid == 2345
    assert stat.S_IMODE((shm / "tls").stat().st_mode) == 0o2755


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_owner_is_applied_and_a_new_owner_rewrites(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    writer.write({"app": FileEntry(b"v", 0o400, uid=1000, gid=1000), "mine": FileEntry(b"m")})
    info = (shm / "app").stat()
    assert (info.st_uid, info.st_gid) == (1000, 1000)
    assert (shm / "mine").stat().st_uid == 0

    assert writer.write({"app": FileEntry(b"v", 0o400, uid=1000, gid=1000), "mine": FileEntry(b"m")}) is False
    assert writer.write({"app": FileEntry(b"v", 0o400, uid=1001, gid=1000), "mine": FileEntry(b"m")}) is True
    assert (shm / "app").stat().st_uid == 1001


def test_chown_without_permission_is_a_clear_error_and_keeps_the_old_snapshot(shm: Path) -> None:
    # A writer without CAP_CHOWN: root with the capability dropped (an unprivileged user may not be able
    # to run this interpreter at all), or simply this unprivileged process.
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, dropping CAP_CHOWN needs setpriv (util-linux)")
        prefix = [setpriv, "--bounding-set", "-chown", "--inh-caps", "-chown"]
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from agent.errors import SinkError
        from agent.sinks.atomic import AtomicDirWriter, FileEntry
        writer = AtomicDirWriter(Path({str(shm)!r}))
        writer.write({{"a": FileEntry(b"old")}})
        try:
            writer.write({{"a": FileEntry(b"CANARY-new", uid=4242)}})
        except SinkError as error:
            print(error)
        print(writer.current()["a"].decode(), sorted(p.name for p in Path({str(shm)!r}).iterdir()))
        """
    )
    result = subprocess.run(
        [*prefix, sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    error_line, state_line = result.stdout.splitlines()
    assert "cannot chown" in error_line
    assert "EPERM" in error_line
    assert "CANARY" not in error_line
    assert state_line.startswith("old ")
    assert state_line.count("'..2") == 1  # the half-written directory is gone


def test_cleanup_removes_only_our_leftovers(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    writer.write({"username": FileEntry(b"alice")})
    (current,) = snapshot_dirs(shm)
    stray = shm / "..2020_01_01_00_00_00.000000000_abc123"
    (stray / "sub").mkdir(parents=True)
    (stray / "sub" / "password").write_bytes(b"half")
    os.symlink(stray.name, shm / "..data_tmp")
    os.symlink("..data/password", shm / "..link_tmp.0123456789ab")
    os.symlink("..data/password", shm / "password")  # ours, but dangling: a crash before the swap
    (shm / "user-file").write_bytes(b"not ours")
    os.symlink("/etc/hostname", shm / "user-link")
    (shm / "..not-a-snapshot").mkdir()

    removed = writer.cleanup()

    assert sorted(removed) == sorted([stray.name, "..data_tmp", "..link_tmp.0123456789ab", "password"])
    assert sorted(os.listdir(shm)) == sorted(
        ["..data", current, "..not-a-snapshot", "username", "user-file", "user-link"]
    )
    assert (shm / "username").read_bytes() == b"alice"
    assert writer.cleanup() == []


def test_refuses_to_replace_a_file_it_did_not_create(shm: Path) -> None:
    (shm / "username").write_bytes(b"hand-written")
    with pytest.raises(SinkError, match="not created by secrets-agent"):
        AtomicDirWriter(shm).write({"username": FileEntry(b"alice")})
    assert (shm / "username").read_bytes() == b"hand-written"
    assert internal_entries(shm) == []


def test_refuses_a_data_entry_that_is_not_a_link(shm: Path) -> None:
    (shm / "..data").mkdir()
    with pytest.raises(SinkError, match="not a symlink"):
        AtomicDirWriter(shm).write({"a": FileEntry(b"1")})


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "a/../b", "..", "../x", "..data", "..data_tmp", "a//b", "./a", "a/", "x/..y"]
)
def test_invalid_paths_are_refused_before_anything_is_written(shm: Path, path: str) -> None:
    with pytest.raises(SinkError, match="snapshot path"):
        AtomicDirWriter(shm).write({path: FileEntry(b"1")})
    assert os.listdir(shm) == []


def test_a_path_inside_another_file_is_refused(shm: Path) -> None:
    with pytest.raises(SinkError, match="inside file 'db'"):
        AtomicDirWriter(shm).write({"db": FileEntry(b"1"), "db/password": FileEntry(b"2")})


def test_hidden_files_are_in_the_snapshot_but_not_linked(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    writer.write({"..index": FileEntry(b"meta", 0o400), "a": FileEntry(b"1")})
    assert not os.path.lexists(shm / "..index")
    assert (shm / "..data" / "..index").read_bytes() == b"meta"
    assert writer.current() == {"..index": b"meta", "a": b"1"}


def test_missing_output_directory_is_created(shm: Path) -> None:
    root = shm / "not" / "yet"
    AtomicDirWriter(root).write({"a": FileEntry(b"1")})
    assert read_consistent(root, "a") == [b"1"]


def test_current_and_cleanup_of_an_empty_directory(shm: Path) -> None:
    writer = AtomicDirWriter(shm / "nothing-here")
    assert writer.current() == {}
    assert writer.cleanup() == []
    assert writer.snapshot_time() is None


def test_file_entry_repr_hides_the_data() -> None:
    assert "CANARY" not in repr(FileEntry(b"CANARY-value", 0o400, 1, 2))
