"""A tiny tmpfs filling up: the write fails cleanly, the old snapshot stays, a retry succeeds after space is
freed. Plus the memory-backed check against /proc/mounts."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent.errors import SinkError
from agent.sinks.atomic import AtomicDirWriter, FileEntry
from agent.sinks.snapshot import SnapshotSink
from agent.sinks.tmpfs import check_memory_backed, filesystem_type, filesystem_type_from_mounts
from tests.sinks.conftest import MountTmpfs
from tests.sinks.helpers import internal_entries, read_consistent, snapshot, snapshot_dirs, spec

CANARY = b"CANARY-d41d8cd9-"


def fill(directory: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on the filesystem of ``directory``."""
    ballast = directory / "ballast"
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    ballast.write_bytes(b"\0" * max(0, free - leave))
    return ballast


def test_disk_full_fails_cleanly_keeps_the_old_snapshot_and_a_retry_succeeds(
    mount_tmpfs: MountTmpfs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    volume = mount_tmpfs("256k")  # room for the old and the new snapshot, each with its env file
    root = volume / "secrets"
    sink = SnapshotSink(root, [spec("username"), spec("password")], Path("app.env"))
    old = snapshot({"username": b"user-1", "password": b"pass-1"}, version="1")
    assert sink.write(old)
    ballast = fill(volume, leave=8 * 1024)
    new = snapshot({"username": b"user-2", "password": CANARY * 2000}, version="2")  # 32 KiB (+32 in the env)

    with pytest.raises(SinkError) as caught:
        sink.write(new)

    message = str(caught.value)
    assert "ENOSPC" in message
    assert str(root) in message
    assert "CANARY" not in message
    assert read_consistent(root, "username", "password") == [b"user-1", b"pass-1"]
    assert (root / "password").read_bytes() == b"pass-1"
    assert b"USERNAME='user-1'" in (root / "app.env").read_bytes()
    assert len(snapshot_dirs(root)) == 1  # the half-written one is gone
    assert "..data_tmp" not in internal_entries(root)
    assert sink.adopt().versions() == {"username": "1", "password": "1"}

    ballast.unlink()
    assert sink.write(new) is True
    assert read_consistent(root, "username", "password") == [b"user-2", CANARY * 2000]
    assert len(snapshot_dirs(root)) == 1
    assert not any(CANARY in record.getMessage().encode() for record in caplog.records)


def test_a_single_file_bigger_than_the_volume_fails_without_a_trace(mount_tmpfs: MountTmpfs) -> None:
    root = mount_tmpfs("64k")
    writer = AtomicDirWriter(root)
    with pytest.raises(SinkError, match="ENOSPC"):
        writer.write({"big": FileEntry(b"x" * 200_000)})
    assert os.listdir(root) == []
    assert writer.write({"small": FileEntry(b"ok")})


# -- is it memory-backed? ------------------------------------------------------------------------------


def test_dev_shm_is_tmpfs_and_the_root_disk_is_not(shm: Path, tmp_path: Path) -> None:
    assert filesystem_type(shm) == "tmpfs"
    assert filesystem_type(shm / "does" / "not" / "exist") == "tmpfs"
    check_memory_backed(shm, require=True)  # no error
    if filesystem_type(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is memory-backed here")
    with pytest.raises(SinkError, match="not on a memory-backed filesystem"):
        check_memory_backed(tmp_path, require=True)


def test_not_memory_backed_only_warns_unless_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\n")
    check_memory_backed(tmp_path, require=False, mounts_file=mounts)
    assert any("emptyDir" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    with pytest.raises(SinkError, match="--require-tmpfs"):
        check_memory_backed(tmp_path, require=True, mounts_file=mounts)


def test_a_mount_point_with_a_space_is_found(mount_tmpfs: MountTmpfs) -> None:
    volume = mount_tmpfs("64k", name="with space")
    assert "\\040" in Path("/proc/mounts").read_text()
    assert filesystem_type(volume / "secrets") == "tmpfs"


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw 0 0
tmpfs /run/secrets tmpfs rw 0 0
/dev/vdb /run/secrets ext4 rw 0 0
none /var/lib/my\\040volume ramfs rw 0 0
tmpfs /var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/secrets tmpfs rw 0 0
broken line
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "ext4"),
        ("/etc/passwd", "ext4"),
        ("/dev/shm", "tmpfs"),
        ("/dev/shm/a/b", "tmpfs"),
        ("/dev/shmx", "ext4"),  # a name prefix is not a path prefix
        ("/run/secrets/a", "ext4"),  # stacked on the same point: the last mount wins
        ("/var/lib/my volume/a", "ramfs"),  # \040 is a space
        ("/var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/secrets/db/password", "tmpfs"),
    ],
)
def test_filesystem_type_from_mounts(path: str, expected: str) -> None:
    assert filesystem_type_from_mounts(MOUNTS, Path(path)) == expected


def test_unreadable_mounts_mean_unknown(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path, mounts_file=tmp_path / "missing") == "unknown"
    with pytest.raises(SinkError, match="is on unknown"):
        check_memory_backed(tmp_path, require=True, mounts_file=tmp_path / "missing")
