"""Resuming interrupted rotations: the lock annotation a dead run left behind, at each step it can be in.

The dead runs are written as they would be (a version added or not, the annotation at a step) by a holder
that is really gone: a process of this host that has exited, or a host whose lock timed out. The
end-to-end version with a real SIGKILL is in test_rotate_cli.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.rotation.config import parse_rotation_config
from agent.rotation.engine import rotate_one
from agent.rotation.lock import ANNOTATION, Holder, RotationState, Step, process_start_ticks, stale_reason
from agent.rotation.results import RotationOptions
from agent.secrets.interface import SecretsBackend
from agent.secrets.types import SecretType
from tests.rotation.helpers_engine import CANARY, Programs, command_settings

OLD = f"{CANARY}-old-value-77c1"
LEFT_BEHIND = f"{CANARY}-key-added-by-the-dead-run"


def dead_holder() -> Holder:
    """A process of this host that has exited."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(child.stdout)
    return Holder(f"ci@{socket.gethostname()} pid {pid}", socket.gethostname(), pid, 12345)


async def leave_lock(
    sm: SecretsBackend,
    secret: str,
    step: Step,
    *,
    new_version: str | None = None,
    holder: Holder | None = None,
    updated: datetime | None = None,
    reason: str = "",
) -> RotationState:
    now = datetime.now(UTC)
    state = RotationState(
        run_id="deadbeef0001",
        holder=holder or dead_holder(),
        started=now - timedelta(seconds=30),
        updated=updated or now - timedelta(seconds=5),
        step=step,
        old_version="1",
        new_version=new_version,
        reason=reason,
    )
    info = await sm.get_secret_info(secret)
    await sm.update_annotations(secret, {ANNOTATION: state.to_annotation()}, etag=info.etag)
    return state


async def states(sm: SecretsBackend, secret: str) -> dict[str, str]:
    return {v.version: v.state for v in await sm.list_versions(secret)}


def options(programs: Programs, tmp_path: Path, *, valid: bool = True) -> RotationOptions:
    validate = programs.check() if valid else programs.reject()
    settings = command_settings(
        programs, validate=validate, rollback=programs.record(tmp_path / "rollback.log")
    )
    return RotationOptions(config=parse_rotation_config({"secrets": {"api": settings}}))


async def test_added_but_not_validated_is_validated_and_finished(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await sm.add_version("api", LEFT_BEHIND)
    await leave_lock(sm, "api", "validate", new_version="2")

    result = await rotate_one(sm, "api", options(programs, tmp_path))

    assert (result.result, result.old_version, result.new_version) == ("rotated", "1", "2"), result.message
    assert result.resumed_run == "deadbeef0001"
    assert result.message.startswith("resumed interrupted run deadbeef0001")
    assert "is gone" in result.message
    assert await states(sm, "api") == {"1": "ENABLED", "2": "ENABLED"}
    assert await sm.get_secret("api") == LEFT_BEHIND
    assert ANNOTATION not in (await sm.get_secret_info("api")).annotations


async def test_added_but_invalid_is_rolled_back(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await sm.add_version("api", LEFT_BEHIND)
    await leave_lock(sm, "api", "validate", new_version="2")

    result = await rotate_one(sm, "api", options(programs, tmp_path, valid=False))

    assert result.result == "rolled-back"
    assert "rejected by the issuer" in result.message
    assert await states(sm, "api") == {"1": "ENABLED", "2": "DISABLED", "3": "ENABLED"}
    assert await sm.get_secret("api") == OLD
    assert (tmp_path / "rollback.log").read_text() == "ran\n"
    assert ANNOTATION not in (await sm.get_secret_info("api")).annotations


async def test_interrupted_during_apply_rolls_back_the_applied_value(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    """The value generated before the crash existed only in the dead process: it cannot be finished."""
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await leave_lock(sm, "api", "apply")

    result = await rotate_one(sm, "api", options(programs, tmp_path))

    assert result.result == "rolled-back"
    assert "interrupted at apply before the new value was stored" in result.message
    assert (tmp_path / "rollback.log").read_text() == "ran\n"  # the old credential put back in force
    assert await states(sm, "api") == {"1": "ENABLED"}
    assert ANNOTATION not in (await sm.get_secret_info("api")).annotations


async def test_interrupted_add_finds_the_version_it_added(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    """The add may have succeeded just before the crash, before its number was recorded."""
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await leave_lock(sm, "api", "add")
    await sm.add_version("api", LEFT_BEHIND)

    result = await rotate_one(sm, "api", options(programs, tmp_path))

    assert (result.result, result.new_version) == ("rotated", "2"), result.message
    assert await sm.get_secret("api") == LEFT_BEHIND


async def test_interrupted_before_apply_starts_afresh(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await leave_lock(sm, "api", "generate")

    result = await rotate_one(sm, "api", options(programs, tmp_path))

    assert (result.result, result.old_version, result.new_version) == ("rotated", "1", "2"), result.message
    assert result.message.startswith("cleared interrupted run deadbeef0001 (nothing was applied); ")
    assert not (tmp_path / "rollback.log").exists()
    assert (await sm.get_secret("api")).startswith(f"{CANARY}-key-")


async def test_an_interrupted_rollback_is_finished(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    """Crashed after disabling the failed version but before putting the old value back as latest."""
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await sm.add_version("api", LEFT_BEHIND)
    await sm.disable_version("api", "2")
    await leave_lock(sm, "api", "rollback", new_version="2", reason="validate: rejected")

    result = await rotate_one(sm, "api", options(programs, tmp_path))

    assert result.result == "rolled-back"
    assert "validate: rejected" in result.message
    assert await states(sm, "api") == {"1": "ENABLED", "2": "DISABLED", "3": "ENABLED"}
    assert await sm.get_secret("api") == OLD


async def test_an_interrupted_finish_is_finished(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await sm.add_version("api", LEFT_BEHIND)
    await leave_lock(sm, "api", "finish", new_version="2")

    result = await rotate_one(sm, "api", options(programs, tmp_path))

    assert (result.result, result.new_version) == ("rotated", "2")
    info = await sm.get_secret_info("api")
    created = (await sm.resolve_version("api", "2")).create_time
    assert info.next_rotation_time == created + timedelta(days=30)
    assert ANNOTATION not in info.annotations


async def test_a_live_holder_keeps_its_lock_and_a_timed_out_one_loses_it(
    sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    await sm.create_secret("api", OLD, SecretType.API_KEY)
    await sm.add_version("api", LEFT_BEHIND)
    here = Holder.current()  # this very process: alive
    await leave_lock(sm, "api", "validate", new_version="2", holder=here)

    locked = await rotate_one(sm, "api", options(programs, tmp_path))
    assert locked.result == "locked"
    assert locked.message.startswith("rotation in progress: run deadbeef0001 by ")

    # On another host nobody can check the process: only the lock timeout frees it.
    elsewhere = Holder("ops@build-7 pid 4242", "build-7", 4242, None)
    await sm.update_annotations("api", {}, [ANNOTATION], etag=(await sm.get_secret_info("api")).etag)
    await leave_lock(sm, "api", "validate", new_version="2", holder=elsewhere)
    assert (await rotate_one(sm, "api", options(programs, tmp_path))).result == "locked"

    await sm.update_annotations("api", {}, [ANNOTATION], etag=(await sm.get_secret_info("api")).etag)
    await leave_lock(
        sm,
        "api",
        "validate",
        new_version="2",
        holder=elsewhere,
        updated=datetime.now(UTC) - timedelta(hours=1),
    )
    resumed = await rotate_one(sm, "api", options(programs, tmp_path))
    assert resumed.result == "rotated"
    assert "not updated for 60m (lock timeout 15m)" in resumed.message


def test_staleness_is_decided_by_age_and_by_the_holder_process() -> None:
    now = datetime.now(UTC)
    me = Holder.current()
    assert me.pid == os.getpid()
    assert me.pid_start == process_start_ticks(os.getpid())
    fresh = RotationState("r1", me, now, now, "validate")
    assert stale_reason(fresh, now, timedelta(minutes=15)) is None
    assert stale_reason(fresh, now + timedelta(minutes=16), timedelta(minutes=15)) is not None
    reused_pid = RotationState(
        "r2", Holder(me.caller, me.host, me.pid, (me.pid_start or 0) + 1), now, now, "apply"
    )
    assert "is gone" in (stale_reason(reused_pid, now, timedelta(minutes=15)) or "")
    parsed = RotationState.from_annotation(fresh.to_annotation())
    assert parsed.run_id == "r1"
    assert parsed.holder == me
    assert parsed.step == "validate"
