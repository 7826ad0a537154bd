"""``rotate --backup-dir`` as a real process: every backup file 0600, the directory private and ours.

A backup holds the value being replaced, so a file of the same name left with another mode, a directory
of another user, a link planted at the name or a umask of 000 must never leave it readable by others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.rotation.backup import BackupError, check_backup_dir, write_backup
from agent.secrets.interface import SecretsBackend
from agent.secrets.types import SecretType
from agent_emulator.server import EmulatorEndpoints
from tests.rotation.test_rotate_cli import OLD, assert_no_value, rotate


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o700)
    return path


async def test_a_backup_replacing_a_file_of_another_mode_is_0600(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    backups = private_dir(tmp_path / "backups")
    older = backups / "enc.v1"  # e.g. left by an earlier run, then opened up by hand
    older.write_bytes(b"stale")
    older.chmod(0o666)

    run = rotate(emulator, "enc", "--backup-dir", str(backups))

    assert run.code == 0, run.stderr
    assert older.read_text() == OLD
    assert mode_of(older) == 0o600
    assert_no_value(run)


async def test_a_link_planted_at_the_backup_name_is_replaced_not_followed(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    backups = private_dir(tmp_path / "backups")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o644)
    (backups / "enc.v1").symlink_to(victim)

    run = rotate(emulator, "enc", "--backup-dir", str(backups))

    assert run.code == 0, run.stderr
    assert (victim.read_bytes(), mode_of(victim)) == (b"precious", 0o644)
    assert not (backups / "enc.v1").is_symlink()
    assert ((backups / "enc.v1").read_text(), mode_of(backups / "enc.v1")) == (OLD, 0o600)


async def test_a_backup_dir_of_another_user_is_refused_before_any_change(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    theirs = private_dir(tmp_path / "theirs")
    os.chown(theirs, 65534, 65534)  # 0700, but nobody's: whoever owns it can read or swap what we put there

    run = rotate(emulator, "enc", "--backup-dir", str(theirs))

    assert run.code == 2, run.stderr
    assert "belongs to uid 65534" in run.stderr
    assert list(theirs.iterdir()) == []
    assert await sm.get_secret("enc") == OLD


async def test_under_umask_000_the_backup_dir_and_its_parents_are_0700(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    backups = tmp_path / "new" / "deeper" / "backups"
    old_umask = os.umask(0)
    try:
        run = rotate(emulator, "enc", "--backup-dir", str(backups))
    finally:
        os.umask(old_umask)

    assert run.code == 0, run.stderr
    for directory in (tmp_path / "new", tmp_path / "new" / "deeper", backups):
        assert mode_of(directory) == 0o700, directory
    assert mode_of(backups / "enc.v1") == 0o600


def test_a_backup_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o703)  # not readable by others, but they can plant files in it
    with pytest.raises(BackupError, match="open to group or others"):
        check_backup_dir(shared)
    with pytest.raises(BackupError, match="open to group or others"):
        write_backup(shared, "enc", "1", b"value")
    assert list(shared.iterdir()) == []
