"""SnapshotSink: a Snapshot becomes files, a manifest and the env file in one swap; a restart adopts it."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from agent.config import SecretSpec
from agent.core.model import Snapshot
from agent.errors import ConfigError, SinkError
from agent.sinks.snapshot import MANIFEST, SnapshotSink
from tests.sinks.helpers import (
    fetched,
    internal_entries,
    manifest_versions,
    read_consistent,
    snapshot,
    snapshot_dirs,
    spec,
)

CANARY = b"CANARY-5e1f-value"


def specs() -> list[SecretSpec]:
    return [
        spec("username"),
        spec("password", file="db/password", mode=0o400),
        spec("api-key", env="API_TOKEN"),
    ]


VALUES = {"username": b"alice", "password": CANARY, "api-key": b"k-1"}


def test_files_manifest_and_env_file_land_in_one_snapshot(shm: Path) -> None:
    sink = SnapshotSink(shm, specs(), Path("app.env"))
    assert sink.write(snapshot(VALUES, version="7")) is True

    assert read_consistent(shm, "username", "db/password", "api-key") == [b"alice", CANARY, b"k-1"]
    assert stat.S_IMODE((shm / "db" / "password").stat().st_mode) == 0o400
    assert os.readlink(shm / "app.env") == "..data/app.env"
    assert dotenv_values(shm / "app.env") == {
        "USERNAME": "alice",
        "PASSWORD": CANARY.decode(),
        "API_TOKEN": "k-1",
    }
    manifest = json.loads((shm / "..data" / MANIFEST).read_bytes())
    assert manifest["secrets"]["password"] == {
        "ref": "projects/test-project/secrets/password/versions/latest",
        "version": "7",
        "crc32c": fetched("password", CANARY).crc32c,
        "file": "db/password",
    }
    assert CANARY not in (shm / "..data" / MANIFEST).read_bytes()
    assert stat.S_IMODE((shm / "..data" / MANIFEST).stat().st_mode) == 0o400
    assert not os.path.lexists(shm / MANIFEST)


def test_unchanged_snapshot_is_not_rewritten(shm: Path) -> None:
    sink = SnapshotSink(shm, specs(), Path("app.env"))
    sink.write(snapshot(VALUES))
    (before,) = snapshot_dirs(shm)
    assert sink.write(snapshot(VALUES)) is False
    assert snapshot_dirs(shm) == [before]


def test_a_new_version_with_the_same_bytes_updates_the_manifest(shm: Path) -> None:
    sink = SnapshotSink(shm, specs(), None)
    sink.write(snapshot(VALUES, version="1"))
    assert sink.write(snapshot(VALUES, version="2")) is True
    assert manifest_versions(shm)["username"][0] == "2"


def test_missing_secrets_are_absent_and_unknown_ones_ignored(shm: Path) -> None:
    sink = SnapshotSink(shm, specs(), Path("app.env"))
    sink.write(snapshot(VALUES))
    partial = snapshot({"username": b"alice", "not-configured": b"x"})

    assert sink.write(partial) is True

    assert sorted(n for n in os.listdir(shm) if not n.startswith("..")) == ["app.env", "username"]
    assert dotenv_values(shm / "app.env") == {"USERNAME": "alice"}
    assert set(manifest_versions(shm)) == {"username"}


def test_env_file_given_as_an_absolute_path_inside_the_output_dir_shares_the_swap(shm: Path) -> None:
    sink = SnapshotSink(shm, specs(), shm / "env" / "app.env")
    sink.write(snapshot(VALUES))
    assert read_consistent(shm, "env/app.env")[0].startswith(b"#")
    assert os.readlink(shm / "env") == "..data/env"


def test_env_file_outside_is_a_second_atomic_step(shm: Path) -> None:
    outside = shm.parent / f"{shm.name}-env" / "app.env"
    try:
        sink = SnapshotSink(shm / "files", specs(), outside, env_file_mode=0o400)
        assert sink.write(snapshot(VALUES)) is True
        assert dotenv_values(outside)["API_TOKEN"] == "k-1"
        assert stat.S_IMODE(outside.stat().st_mode) == 0o400
        inode = outside.stat().st_ino

        assert sink.write(snapshot(VALUES)) is False
        assert outside.stat().st_ino == inode

        outside.unlink()  # somebody removed it: the next write puts it back
        assert sink.write(snapshot(VALUES)) is True
        assert dotenv_values(outside)["USERNAME"] == "alice"
        assert os.listdir(outside.parent) == ["app.env"]  # no temporary file left
    finally:
        for leftover in outside.parent.glob("*"):
            leftover.unlink()
        outside.parent.rmdir()


def test_env_file_outside_failing_says_the_files_were_swapped_and_is_retried(shm: Path) -> None:
    blocker = shm / "not-a-dir"
    blocker.write_bytes(b"")
    sink = SnapshotSink(shm / "files", specs(), blocker / "app.env")

    with pytest.raises(SinkError) as caught:
        sink.write(snapshot(VALUES))

    assert "the secret files were swapped but the env file" in str(caught.value)
    assert "CANARY" not in str(caught.value)
    assert read_consistent(shm / "files", "username") == [b"alice"]
    blocker.unlink()
    assert sink.write(snapshot(VALUES)) is True  # files unchanged, env file now written
    assert dotenv_values(blocker / "app.env")["USERNAME"] == "alice"


def test_a_value_the_env_file_cannot_hold_still_goes_to_its_file(
    shm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    binary = b"CANARY-\xff\xfe-binary"
    sink = SnapshotSink(shm, specs(), Path("app.env"))
    values = {**VALUES, "api-key": binary}

    assert sink.write(snapshot(values)) is True

    assert (shm / "api-key").read_bytes() == binary
    assert dotenv_values(shm / "app.env") == {"USERNAME": "alice", "PASSWORD": CANARY.decode()}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'api-key'" in warnings[0]
    assert "not UTF-8" in warnings[0]
    sink.write(snapshot(values, version="2"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # said once
    for record in caplog.records:
        assert b"CANARY" not in record.getMessage().encode()


def test_restart_adopts_what_is_on_disk(shm: Path) -> None:
    SnapshotSink(shm, specs(), Path("app.env")).write(snapshot(VALUES, version="3"))

    restarted = SnapshotSink(shm, specs(), Path("app.env"))
    adopted = restarted.adopt()

    assert {item.name: item.data for item in adopted} == VALUES
    assert set(adopted.versions().values()) == {"3"}
    assert all(item.fetched_at <= os.lstat(shm / "..data").st_mtime for item in adopted)
    assert restarted.write(adopted) is False
    assert manifest_versions(shm) == {
        name: ("3", fetched(name, data).crc32c) for name, data in VALUES.items()
    }


def test_adoption_skips_changed_references_and_tampered_files(
    shm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SnapshotSink(shm, specs(), None).write(snapshot(VALUES))
    data_dir = shm / os.readlink(shm / "..data")
    os.chmod(data_dir / "api-key", 0o600)
    (data_dir / "api-key").write_bytes(b"tampered")
    moved = [spec("username", ref="projects/test-project/secrets/other/versions/1"), *specs()[1:]]

    adopted = SnapshotSink(shm, moved, None).adopt()

    assert sorted(adopted.items) == ["password"]
    assert any("not adopting api-key" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("manifest", [None, b"{not json", b'{"format": 99, "secrets": {}}', b"[]"])
def test_no_usable_manifest_adopts_nothing(shm: Path, manifest: bytes | None) -> None:
    SnapshotSink(shm, specs(), None).write(snapshot(VALUES))
    path = shm / os.readlink(shm / "..data") / MANIFEST
    if manifest is None:
        path.unlink()
    else:
        os.chmod(path, 0o600)
        path.write_bytes(manifest)
    assert SnapshotSink(shm, specs(), None).adopt() == Snapshot()


def test_adopt_of_an_empty_directory_is_empty_and_cleans_leftovers(shm: Path) -> None:
    (shm / "..2020_01_01_00_00_00.000000000_zzzzzz").mkdir()
    assert SnapshotSink(shm, specs(), None).adopt() == Snapshot()
    assert internal_entries(shm) == []


@pytest.mark.parametrize(
    ("env_file", "message"),
    [
        (Path("username"), "collides with the file of secret 'username'"),
        (Path("db"), "collides with the file of secret 'password'"),
        (Path("username/app.env"), "collides with the file of secret 'username'"),
        (Path("..env"), "reserved"),
        (Path("sub/../..data"), "reserved"),
    ],
)
def test_env_file_paths_that_clash_are_configuration_errors(shm: Path, env_file: Path, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        SnapshotSink(shm, specs(), env_file)
    assert caught.value.problems[0].path == "env_file"


def test_no_value_in_any_error_or_log(shm: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    canary = b"CANARY-0b5e-\r-" + bytes(range(256))
    errors: list[str] = []
    sink = SnapshotSink(shm / "out", specs(), Path("app.env"))
    sink.write(snapshot({"username": canary, "password": canary, "api-key": canary}))
    data_dir = shm / "out" / os.readlink(shm / "out" / "..data")
    os.chmod(data_dir / "username", 0o600)
    (data_dir / "username").write_bytes(canary + b"tampered")
    SnapshotSink(shm / "out", specs(), Path("app.env")).adopt()
    (shm / "taken").mkdir()
    (shm / "taken" / "username").write_bytes(b"")
    blocked = SnapshotSink(shm / "taken", specs(), shm / "out" / "username" / "x.env")
    for failing in (blocked, SnapshotSink(shm / "env", specs(), shm / "out" / "api-key" / "x.env")):
        with pytest.raises(SinkError) as caught:
            failing.write(snapshot({"username": canary, "password": canary}))
        errors.append(str(caught.value))

    assert len(errors) == 2
    texts = errors + [r.getMessage() for r in caplog.records]
    assert any("left out of the env file" in t for t in texts)
    for text in texts:
        assert "CANARY" not in text
