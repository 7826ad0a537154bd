"""``secrets-agent rotation status``: ages, due dates and OVERDUE from the emulator's clock; TLS rotated
elsewhere; a rotation in progress shown; table and JSON, from a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from google.cloud import secretmanager_v1

from agent.rotation.lock import ANNOTATION, Holder, RotationState
from agent.rotation.status import rotation_status
from agent.secrets.interface import SecretsBackend
from agent.secrets.types import SecretType
from agent_emulator.server import EmulatorEndpoints
from tests.rotation.helpers_engine import CANARY, PROJECT, advance_clock, emulator_now, parse_time


def status(emulator: EmulatorEndpoints, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    env["SECRET_MANAGER_EMULATOR_HOST"] = emulator.grpc_target
    return subprocess.run(
        [sys.executable, "-m", "agent", "rotation", "status", "--project", PROJECT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def seed(sm: SecretsBackend) -> None:
    await sm.create_secret("api", f"{CANARY}-a", SecretType.API_KEY)  # 30 days
    await sm.create_secret("db", f"{CANARY}-d", SecretType.DATABASE)  # 90 days
    await sm.create_secret("cert", f"{CANARY}-c", SecretType.TLS_CERT)  # rotated elsewhere


async def test_status_marks_what_is_overdue_at_the_emulators_time(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await seed(sm)
    advance_clock(emulator, 45 * 86400)  # api (30 d) is overdue, db (90 d) is not

    run = status(emulator, "--now", emulator_now(emulator), "--output", "text")

    assert run.returncode == 0, run.stderr
    table, _, summary = run.stdout.partition("\n\n")
    lines = table.splitlines()
    assert lines[0].split() == ["SECRET", "TYPE", "VERSION", "AGE", "NEXT", "DUE", "OVERDUE", "NOTE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["api"][1:4] == ["api-key", "1", "45d"]
    assert "OVERDUE" in rows["api"]
    assert rows["db"][1:4] == ["database", "1", "45d"]
    assert "OVERDUE" not in rows["db"]
    assert " ".join(rows["cert"][1:]).startswith("tls-cert 1 45d rotated elsewhere")
    assert "1 overdue" in summary, summary
    assert CANARY not in run.stdout + run.stderr


async def test_status_json_and_a_rotation_in_progress(
    emulator: EmulatorEndpoints, sm: SecretsBackend, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await seed(sm)
    # A secret without a secret-type label is none of rotation's business.
    client.create_secret(
        request={
            "parent": f"projects/{PROJECT}",
            "secret_id": "plain",
            "secret": {"replication": {"automatic": {}}},
        }
    )
    now = datetime.now(UTC)
    state = RotationState(
        "0123abcd", Holder("ops@build-7 pid 9", "build-7", 9), now, now, "validate", "1", "2"
    )
    info = await sm.get_secret_info("db")
    await sm.update_annotations("db", {ANNOTATION: state.to_annotation()}, etag=info.etag)

    run = status(emulator, "--output", "json")

    assert run.returncode == 0, run.stderr
    by_secret = {row["secret"]: row for row in json.loads(run.stdout)["secrets"]}
    assert set(by_secret) == {"api", "cert", "db"}
    db = by_secret["db"]
    assert db["type"] == "database"
    assert db["current_version"] == "1"
    assert db["overdue"] is False
    created = (await sm.resolve_version("db", "1")).create_time
    # Due 90 days after version 1, or at the rotation policy's next_rotation_time if that is earlier: it was
    # set 90 days after the secret's creation, a moment before version 1's, and on a busy machine the two
    # can fall on either side of a whole second (all that the JSON shows).
    due = created + timedelta(days=90)
    if info.next_rotation_time is not None:
        assert abs(info.next_rotation_time - due) < timedelta(seconds=5)
        due = min(due, info.next_rotation_time)
    assert parse_time(db["next_due"]) == due.replace(microsecond=0)
    assert db["note"].startswith("rotation in progress: run 0123abcd by ops@build-7 pid 9")
    assert by_secret["cert"]["note"] == "rotated elsewhere"
    assert by_secret["cert"]["next_due"] is None


async def test_a_secret_without_an_enabled_version_is_overdue(sm: SecretsBackend) -> None:
    await sm.create_secret("api", f"{CANARY}-a", SecretType.API_KEY)
    await sm.disable_version("api", "1")

    [row] = await rotation_status(sm, None, datetime.now(UTC))

    assert (row.current_version, row.overdue, row.note) == (None, True, "no enabled version")
