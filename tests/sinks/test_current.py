"""Reading a snapshot back accepts only what the agent could have written (planted snapshots, real files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.core.model import crc32c
from agent.errors import SinkError
from agent.sinks.atomic import AtomicDirWriter, FileEntry
from agent.sinks.current import MAX_ENTRIES, MAX_FILE_BYTES
from agent.sinks.snapshot import MANIFEST, SnapshotSink
from tests.sinks.helpers import spec

PLANTED = "..2024_01_01_00_00_00.000000000_abcdef"


def written(root: Path) -> Path:
    """A snapshot written by the agent itself; returns its directory."""
    AtomicDirWriter(root).write({"username": FileEntry(b"alice"), "db/password": FileEntry(b"s3cret")})
    return root / os.readlink(root / "..data")


def test_the_agents_own_snapshot_reads_back(shm: Path) -> None:
    written(shm)
    writer = AtomicDirWriter(shm)
    assert writer.current() == {"username": b"alice", "db/password": b"s3cret"}
    assert writer.current(["db/password", "missing"]) == {"db/password": b"s3cret"}


@pytest.mark.parametrize("where", ["username", "db/password"])
def test_a_link_inside_the_snapshot_is_refused_not_followed(shm: Path, tmp_path: Path, where: str) -> None:
    host = tmp_path / "host"
    host.write_bytes(b"host file")
    directory = written(shm)
    os.unlink(directory / where)
    (directory / where).symlink_to(host)
    writer = AtomicDirWriter(shm)
    for reading in (lambda: writer.current(), lambda: writer.current([where])):
        with pytest.raises(SinkError, match="a symbolic link"):
            reading()
    # The next write does not take the planted tree for the current one: it writes a real snapshot.
    assert writer.write({"username": FileEntry(b"alice"), "db/password": FileEntry(b"s3cret")})
    assert writer.current() == {"username": b"alice", "db/password": b"s3cret"}


def test_a_snapshot_directory_that_is_a_link_is_refused(shm: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "username")  # reading it would block
    (shm / PLANTED).symlink_to(elsewhere)
    (shm / "..data").symlink_to(PLANTED)
    with pytest.raises(SinkError, match="not a snapshot directory of ours: a symbolic link"):
        AtomicDirWriter(shm).current()


def test_a_data_link_out_of_the_directory_is_refused(shm: Path) -> None:
    (shm / "..data").symlink_to("/")
    with pytest.raises(SinkError, match="not a snapshot directory of ours"):
        AtomicDirWriter(shm).current()


def test_fifos_hard_links_and_big_files_are_refused(shm: Path, tmp_path: Path) -> None:
    directory = written(shm)
    writer = AtomicDirWriter(shm)
    os.unlink(directory / "username")
    os.mkfifo(directory / "username")
    with pytest.raises(SinkError, match="not a regular file"):
        writer.current()
    with pytest.raises(SinkError, match="not a regular file"):
        writer.current(["username"])
    os.unlink(directory / "username")
    os.link(directory / "db" / "password", shm / "second-name")
    with pytest.raises(SinkError, match="several hard links"):
        writer.current(["db/password"])
    os.unlink(shm / "second-name")
    with open(directory / "db" / "password", "r+b") as stream:
        stream.truncate(MAX_FILE_BYTES + 1)  # sparse: costs nothing unless someone reads it
    with pytest.raises(SinkError, match=f"larger than {MAX_FILE_BYTES} bytes"):
        writer.current(["db/password"])


def test_directories_open_to_others_are_refused(shm: Path) -> None:
    directory = written(shm)
    os.chmod(directory / "db", 0o777)
    with pytest.raises(SinkError, match="writable by others"):
        AtomicDirWriter(shm).current(["db/password"])
    os.chmod(directory / "db", 0o755)
    os.chmod(directory, 0o775)
    with pytest.raises(SinkError, match="writable by others"):
        AtomicDirWriter(shm).current()


def test_too_many_entries_are_refused_without_reading_them(shm: Path) -> None:
    directory = written(shm)
    for index in range(MAX_ENTRIES):
        os.close(os.open(directory / f"f{index}", os.O_CREAT | os.O_WRONLY, 0o400))
    with pytest.raises(SinkError, match=f"more than {MAX_ENTRIES} entries"):
        AtomicDirWriter(shm).current()


def test_adoption_reads_only_the_manifest_and_configured_files(shm: Path) -> None:
    writer = AtomicDirWriter(shm)
    manifest = {
        "format": 1,
        "secrets": {
            "username": {
                "ref": "projects/test-project/secrets/username/versions/latest",
                "version": "4",
                "crc32c": crc32c(b"alice"),
                "file": "username",
            }
        },
    }
    writer.write(
        {
            "username": FileEntry(b"alice"),
            "unconfigured": FileEntry(b"x"),
            MANIFEST: FileEntry(json.dumps(manifest).encode(), 0o400),
        }
    )
    directory = shm / os.readlink(shm / "..data")
    os.unlink(directory / "unconfigured")
    os.mkfifo(directory / "unconfigured")  # never opened: no configured secret names it

    adopted = SnapshotSink(shm, [spec("username")], None).adopt()

    assert {item.name: (item.version, item.data) for item in adopted} == {"username": ("4", b"alice")}
