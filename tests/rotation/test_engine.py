"""The rotation engine against the emulator (official client through SecretManager) and a real .env file
(LocalSecretManager), with real credential programs for the command provider."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.observe.logs import FIELDS_KEY, REDACTED
from agent.rotation.config import RotationConfig, parse_rotation_config
from agent.rotation.engine import rotate_many, rotate_one
from agent.rotation.lock import ANNOTATION
from agent.rotation.marks import ROLLED_BACK
from agent.rotation.results import RotationOptions
from agent.rotation.selection import select_secrets
from agent.rotation.status import rotation_status
from agent.secrets.interface import SecretsBackend
from agent.secrets.local import LocalSecretManager
from agent.secrets.types import SecretType
from agent_emulator.server import EmulatorEndpoints
from testing.logs import logged_text
from tests.rotation.helpers_engine import (
    CANARY,
    Programs,
    admin,
    advance_clock,
    command_settings,
    emulator_now,
    manager,
    parse_time,
    write_calls,
)

OLD = f"{CANARY}-old-value-3f9a"


@pytest.fixture(params=["secret-manager", "dotenv"])
async def backend(
    request: pytest.FixtureRequest, emulator: EmulatorEndpoints, tmp_path: Path
) -> AsyncIterator[SecretsBackend]:
    """The same tests over Secret Manager (the emulator) and over a .env file."""
    sm: SecretsBackend = (
        manager(emulator) if request.param == "secret-manager" else LocalSecretManager(tmp_path / ".env")
    )
    yield sm
    await sm.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def config_of(secrets: dict[str, dict[str, Any]]) -> RotationConfig:
    return parse_rotation_config({"secrets": secrets})


def audit(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [dict(getattr(r, FIELDS_KEY)) for r in caplog.records if r.name == "agent.audit"]


def assert_no_value_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = logged_text(caplog.records)
    assert CANARY not in text
    assert REDACTED not in text  # not even an attempt that the redaction net caught


async def states(backend: SecretsBackend, secret: str) -> dict[str, str]:
    return {v.version: v.state for v in await backend.list_versions(secret)}


# --------------------------------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------------------------------


async def test_a_symmetric_key_is_rotated_validated_and_rescheduled(
    backend: SecretsBackend, logs: pytest.LogCaptureFixture
) -> None:
    await backend.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)

    result = await rotate_one(backend, "enc")

    assert (result.result, result.old_version, result.new_version) == ("rotated", "1", "2"), result.message
    assert result.provider == "symmetric"
    new_value = await backend.get_secret_bytes("enc")  # latest
    assert len(base64.b64decode(new_value, validate=True)) == 32  # the type's default: 32 bytes, base64
    assert await states(backend, "enc") == {"1": "ENABLED", "2": "ENABLED"}  # the old one stays enabled
    assert await backend.get_secret("enc", "1") == OLD
    info = await backend.get_secret_info("enc")
    assert ANNOTATION not in info.annotations  # the lock is cleared
    if isinstance(backend, LocalSecretManager) or info.next_rotation_time is not None:
        created = (await backend.resolve_version("enc", "2")).create_time
        assert info.next_rotation_time == created + timedelta(days=180)
    events = audit(logs)
    assert any(e["operation"] == "add" and e["result"] == "ok" and e["version"] == "2" for e in events)
    rotations = [e for e in events if e["operation"] == "rotate"]
    assert [(e["result"], e["version"]) for e in rotations] == [("ok", "2")]
    assert_no_value_logged(logs)


async def test_a_rotation_reads_the_secrets_metadata_twice_not_once_per_lock_write(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    """GetSecret counts against the 600 reads/min quota: a `rotate all` of many secrets must not spend
    a read before every write of its lock."""
    await sm.create_secret("enc", f"{OLD}-enc", SecretType.ENCRYPTION_KEY)
    admin(emulator, "POST", "/counters:reset", {})

    result = await rotate_one(sm, "enc")

    assert result.result == "rotated"
    calls = {
        method: sum(by_status.values())
        for method, by_status in admin(emulator, "GET", "/counters")["methods"].items()
    }
    assert calls["GetSecret"] <= 2, calls
    assert calls["AddSecretVersion"] == 1
    assert calls["AccessSecretVersion"] == 1  # the backup of the old value


async def test_each_group_rotates_with_its_provider(
    sm: SecretsBackend, programs: Programs, logs: pytest.LogCaptureFixture
) -> None:
    for secret, kind in [
        ("enc", SecretType.ENCRYPTION_KEY),
        ("jwt", SecretType.JWT_SECRET),
        ("session", SecretType.SESSION_SECRET),
        ("stripe", SecretType.API_KEY),
        ("github-oauth", SecretType.OAUTH_TOKEN),
        ("ingress-tls", SecretType.TLS_CERT),
    ]:
        await sm.create_secret(secret, f"{OLD}-{secret}", kind)
    config = config_of(
        {
            "stripe": command_settings(programs, kind="apikey"),
            "github-oauth": command_settings(programs, kind="oauth"),
        }
    )
    options = RotationOptions(config=config)

    for group, expected in [
        ("symmetric", ["enc", "jwt", "session"]),
        ("api-keys", ["stripe"]),
        ("oauth", ["github-oauth"]),
    ]:
        selected = await select_secrets(sm, [group], config)
        assert selected == expected
        results = await rotate_many(sm, selected, options)
        assert [(r.secret_id, r.result, r.new_version) for r in results] == [
            (s, "rotated", "2") for s in expected
        ]

    assert (await sm.get_secret("stripe")).startswith(f"{CANARY}-apikey-")
    assert (await sm.get_secret("github-oauth")).startswith(f"{CANARY}-oauth-")
    assert len(base64.urlsafe_b64decode(await sm.get_secret("jwt") + "==")) == 64  # JWT default: 64 bytes
    # `all` lists TLS certificates too, and skips them: cert-manager rotates those.
    assert "ingress-tls" in await select_secrets(sm, ["all"], config)
    tls = await rotate_one(sm, "ingress-tls", options)
    assert (tls.result, tls.new_version) == ("skipped", None)
    assert "rotated elsewhere" in tls.message
    assert await states(sm, "ingress-tls") == {"1": "ENABLED"}
    assert_no_value_logged(logs)


async def test_disable_previous_only_after_success(sm: SecretsBackend, programs: Programs) -> None:
    await sm.create_secret("ok", OLD, SecretType.API_KEY)
    await sm.create_secret("bad", OLD, SecretType.API_KEY)
    config = config_of(
        {"ok": command_settings(programs), "bad": command_settings(programs, validate=programs.reject())}
    )
    options = RotationOptions(config=config, disable_previous=True)

    ok, bad = await rotate_many(sm, ["ok", "bad"], options)

    assert ok.result == "rotated"
    assert "version 1 disabled" in ok.message
    assert await states(sm, "ok") == {"1": "DISABLED", "2": "ENABLED"}
    assert bad.result == "rolled-back"
    assert (await states(sm, "bad"))["1"] == "ENABLED"  # never disabled when the rotation failed


async def test_backup_dir_gets_the_old_value_in_a_private_file(sm: SecretsBackend, tmp_path: Path) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    backups = tmp_path / "backups"

    result = await rotate_one(sm, "enc", RotationOptions(backup_dir=backups))

    assert result.result == "rotated"
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    file = backups / "enc.v1"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert file.read_text() == OLD
    assert [p.name for p in backups.iterdir()] == ["enc.v1"]  # no temporary file left behind


async def test_a_backup_dir_open_to_others_stops_the_rotation_before_any_change(
    sm: SecretsBackend, tmp_path: Path
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    backups = tmp_path / "shared"
    backups.mkdir(mode=0o755)
    os.chmod(backups, 0o755)

    result = await rotate_one(sm, "enc", RotationOptions(backup_dir=backups))

    assert result.result == "failed"
    assert "chmod 700" in result.message
    assert "nothing was changed" in result.message
    assert await states(sm, "enc") == {"1": "ENABLED"}
    assert ANNOTATION not in (await sm.get_secret_info("enc")).annotations


# --------------------------------------------------------------------------------------------------
# Failures and rollback
# --------------------------------------------------------------------------------------------------


async def test_failed_validation_rolls_back_and_latest_serves_the_old_value(
    backend: SecretsBackend, programs: Programs, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    await backend.create_secret("stripe", OLD, SecretType.API_KEY)
    rollbacks = tmp_path / "rollbacks.log"
    settings = command_settings(programs, validate=programs.reject(), rollback=programs.record(rollbacks))

    result = await rotate_one(backend, "stripe", RotationOptions(config=config_of({"stripe": settings})))

    assert result.result == "rolled-back"
    assert "validate" in result.message
    assert "rejected by the issuer: key not active" in result.message
    assert (result.old_version, result.new_version, result.restored_version) == ("1", "2", "3")
    # The failed version is disabled; `latest` (the newest version) is the old value again, so readers of
    # latest keep working and agents that fetched version 2 move back through the usual version-add path.
    assert await states(backend, "stripe") == {"1": "ENABLED", "2": "DISABLED", "3": "ENABLED"}
    assert await backend.get_secret("stripe") == OLD
    assert rollbacks.read_text() == "ran\n"  # the provider's rollback restored the old credential
    assert ANNOTATION not in (await backend.get_secret_info("stripe")).annotations
    assert [e["result"] for e in audit(logs) if e["operation"] == "rotate"] == ["rolled-back"]
    assert_no_value_logged(logs)


async def test_a_failing_generate_changes_nothing(sm: SecretsBackend, programs: Programs) -> None:
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    settings = {"provider": "command", "generate": programs.reject(), "validate": programs.check()}

    result = await rotate_one(sm, "stripe", RotationOptions(config=config_of({"stripe": settings})))

    assert result.result == "failed"
    assert result.message.startswith("generate:")
    assert "nothing was changed" in result.message
    assert await states(sm, "stripe") == {"1": "ENABLED"}
    assert ANNOTATION not in (await sm.get_secret_info("stripe")).annotations


async def test_secrets_that_cannot_be_rotated_say_how_to_fix_it(sm: SecretsBackend) -> None:
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)  # API keys have no default provider

    unconfigured = await rotate_one(sm, "stripe")
    missing = await rotate_one(sm, "no-such-secret")
    bad = await rotate_one(
        sm, "stripe", RotationOptions(config=config_of({"stripe": {"provider": "command", "generat": ["x"]}}))
    )

    assert unconfigured.result == "failed"
    assert "no rotation provider for 'stripe'" in unconfigured.message
    assert "rotation config file" in unconfigured.message
    assert (missing.result, missing.message) == ("failed", "no such secret")
    assert bad.result == "failed"
    assert "generat" in bad.message
    assert await states(sm, "stripe") == {"1": "ENABLED"}


# --------------------------------------------------------------------------------------------------
# Plans and schedules
# --------------------------------------------------------------------------------------------------


async def test_dry_run_plans_and_writes_nothing(
    emulator: EmulatorEndpoints, sm: SecretsBackend, programs: Programs
) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    config = config_of({"stripe": command_settings(programs)})
    admin(emulator, "POST", "/counters:reset", {})

    results = await rotate_many(sm, ["enc", "stripe"], RotationOptions(config=config, dry_run=True))

    assert [r.result for r in results] == ["planned", "planned"]
    assert "would rotate with symmetric (default)" in results[0].message
    assert "would rotate with command (config)" in results[1].message
    assert write_calls(emulator) == 0
    assert await states(sm, "enc") == {"1": "ENABLED"}


async def test_due_only_follows_the_emulator_clock(emulator: EmulatorEndpoints, sm: SecretsBackend) -> None:
    await sm.create_secret("jwt", OLD, SecretType.JWT_SECRET)  # 180 days
    await sm.create_secret("session", OLD, SecretType.SESSION_SECRET)  # 180 days

    def options() -> RotationOptions:
        return RotationOptions(due_only=True, now=parse_time(emulator_now(emulator)))

    early = await rotate_many(sm, ["jwt", "session"], options())
    assert [r.result for r in early] == ["not-due", "not-due"]
    assert "due " in early[0].message

    advance_clock(emulator, 181 * 86400)  # past next_rotation_time: the service fires SECRET_ROTATE too
    due = await rotate_many(sm, ["jwt", "session"], options())
    assert [(r.result, r.new_version) for r in due] == [("rotated", "2"), ("rotated", "2")]
    info = await sm.get_secret_info("jwt")
    created = (await sm.resolve_version("jwt", "2")).create_time
    assert info.next_rotation_time == created + timedelta(days=180)  # from the service's clock

    again = await rotate_many(sm, ["jwt"], options())
    assert again[0].result == "not-due"


# --------------------------------------------------------------------------------------------------
# Locking
# --------------------------------------------------------------------------------------------------


async def test_concurrent_rotations_of_one_secret_rotate_it_once(
    sm: SecretsBackend, programs: Programs
) -> None:
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    config = config_of({"stripe": command_settings(programs, validate=programs.check(sleep=0.5))})
    options = RotationOptions(config=config)

    results = await asyncio.gather(*(rotate_one(sm, "stripe", options) for _ in range(3)))

    assert sorted(r.result for r in results) == ["locked", "locked", "rotated"]
    locked = next(r for r in results if r.result == "locked")
    assert "rotation in progress: run" in locked.message
    assert f"pid {os.getpid()}" in locked.message
    assert await states(sm, "stripe") == {"1": "ENABLED", "2": "ENABLED"}


async def test_a_slow_step_keeps_its_lock_fresh(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    """The lock is refreshed while a step runs: a rotation slower than lock_timeout is not taken over."""
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)
    started = tmp_path / "validating"
    config = config_of({"stripe": command_settings(programs, validate=programs.check(1.2, started))})
    options = RotationOptions(
        config=config, lock_timeout=timedelta(seconds=0.5), heartbeat=timedelta(seconds=0.1)
    )

    first = asyncio.ensure_future(rotate_one(sm, "stripe", options))
    while not started.exists():  # noqa: ASYNC110 (the flag is a file another process creates)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.7)  # longer than lock_timeout since the step began
    second = await rotate_one(sm, "stripe", options)

    assert second.result == "locked"
    assert (await first).result == "rotated"
    assert len(await states(sm, "stripe")) == 2


async def test_an_unreadable_lock_is_reported_not_overwritten(sm: SecretsBackend) -> None:
    await sm.create_secret("enc", OLD, SecretType.ENCRYPTION_KEY)
    info = await sm.get_secret_info("enc")
    await sm.update_annotations("enc", {ANNOTATION: "not json"}, etag=info.etag)

    result = await rotate_one(sm, "enc")

    assert result.result == "failed"
    assert ANNOTATION in result.message
    assert "remove the annotation" in result.message
    assert (await sm.get_secret_info("enc")).annotations[ANNOTATION] == "not json"
    assert await states(sm, "enc") == {"1": "ENABLED"}


async def test_a_rolled_back_secret_stays_due_until_a_rotation_succeeds(
    emulator: EmulatorEndpoints, sm: SecretsBackend, programs: Programs
) -> None:
    """The rollback re-adds the old value as a new version; that version must not look freshly rotated."""
    await sm.create_secret("stripe", OLD, SecretType.API_KEY)  # 30 days
    advance_clock(emulator, 31 * 86400)
    failing = config_of({"stripe": command_settings(programs, validate=programs.reject())})
    working = config_of({"stripe": command_settings(programs)})

    def at_emulator_time(config: RotationConfig) -> RotationOptions:
        return RotationOptions(config=config, due_only=True, now=parse_time(emulator_now(emulator)))

    rolled_back = await rotate_one(sm, "stripe", at_emulator_time(failing))
    assert (rolled_back.result, rolled_back.restored_version) == ("rolled-back", "3")
    [row] = await rotation_status(sm, None, parse_time(emulator_now(emulator)))
    assert row.overdue  # version 3 is a minute old, but its value is version 1's: 31 days
    assert row.note.startswith("last rotation rolled back ")
    assert "rejected by the issuer" in row.note

    retried = await rotate_one(sm, "stripe", at_emulator_time(working))
    assert (retried.result, retried.old_version, retried.new_version) == ("rotated", "3", "4"), (
        retried.message
    )
    assert ROLLED_BACK not in (await sm.get_secret_info("stripe")).annotations
    assert (await rotate_one(sm, "stripe", at_emulator_time(working))).result == "not-due"
