"""The soak, short: 30 seconds of ``python -m bench.soak`` inside ``make test``, its invariants asserted.

The soak itself (``bench/soak/``) runs the real agent against the emulator with faults, SIGKILLs, a Pub/Sub
restart and a full disk, and judges its invariants; here they are asserted one by one from its ``--json``
document, so a failure names the invariant. The first tests show that the soak's checks do catch a torn or
mixed read (a checker that cannot fail proves nothing): the checks live in ``testing/soak_values.py``, which
the soak and this test share. The tests never import ``bench``: the soak's schedule is read from
``python -m bench.soak --plan``, the run from ``python -m bench.soak --json``.

On a loaded 2-core machine the run takes about a minute (the Pub/Sub emulator's JVM start included); the
convergence bound is the soak's default, 60 s, many times what the agent needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testing.soak_values import SecretSet, check_answer, check_snapshot, generation, render, secret_set

ROOT = Path(__file__).resolve().parents[2]
SEED = 7
SOAK_TIMEOUT = 330
"""Seconds; a run takes about one minute (30 s, plus the Pub/Sub emulator's JVM start and convergence)."""
PLAN_TIMEOUT = 60
"""Seconds for ``--plan``, which only parses its flags and draws the schedule (no process, no emulator)."""
SECRETS = secret_set(6)


# --------------------------------------------------------------------------------------------------
# The checks can fail
# --------------------------------------------------------------------------------------------------


def snapshot_of(secrets: SecretSet, versions: dict[str, int]) -> tuple[dict[str, str], str, str]:
    """Files, manifest and env file of a whole snapshot at ``versions`` (version v holds generation v-1)."""
    files = {name: render(name, versions[name] - 1, SEED) for name in secrets.names}
    manifest = json.dumps({"secrets": {name: {"version": str(v)} for name, v in versions.items()}})
    env = "".join(f"{name.upper().replace('-', '_')}='{value}'\n" for name, value in files.items())
    return files, manifest, env


def test_a_whole_snapshot_passes_and_a_split_pair_is_only_reported() -> None:
    versions = dict.fromkeys(SECRETS.names, 3)
    user, password = SECRETS.pairs[0]
    versions[password] = 2  # the round fetched the new user but not yet the new password
    files, manifest, env = snapshot_of(SECRETS, versions)

    verdict = check_snapshot(files, manifest, env, SECRETS)

    assert verdict.whole, (verdict.torn, verdict.mixed)
    assert verdict.versions == versions
    assert verdict.split_pairs == [f"{user}@3 with {password}@2"]


def test_a_file_from_another_snapshot_is_a_mixed_read() -> None:
    versions = dict.fromkeys(SECRETS.names, 3)
    files, manifest, env = snapshot_of(SECRETS, versions)
    name = SECRETS.singles[0]
    files[name] = render(name, 3, SEED)  # version 4's value under version 3's manifest
    assert check_snapshot(files, manifest, None, SECRETS).mixed == [
        f"{name}: file holds version 4, manifest says 3"
    ]
    files, manifest, env = snapshot_of(SECRETS, versions)
    env = env.replace(render(name, 2, SEED), render(name, 1, SEED))  # an env line from an older snapshot
    assert check_snapshot(files, manifest, env, SECRETS).mixed == [
        f"{name}: the env file's line differs from the file"
    ]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: v[: len(v) // 2], id="cut-short"),
        pytest.param(lambda v: v.replace(":g2:", ":g3:"), id="checksum"),
    ],
)
def test_a_torn_value_is_caught(damage: Any) -> None:
    files, manifest, _env = snapshot_of(SECRETS, dict.fromkeys(SECRETS.names, 3))
    name = SECRETS.names[0]
    files[name] = damage(files[name])
    verdict = check_snapshot(files, manifest, None, SECRETS)
    assert len(verdict.torn) == 1
    assert verdict.torn[0].startswith(f"{name}: ")
    assert generation(SECRETS.names[1], files[SECRETS.names[1]]) == 2


def test_an_endpoint_body_must_be_the_version_its_headers_state() -> None:
    name = SECRETS.singles[0]
    body = render(name, 4, SEED).encode()
    assert check_answer(name, body, "5", '"5-abcd"').whole
    assert check_answer(name, body, "4", '"5-abcd"').mixed
    assert check_answer(name, body, "5", '"4-abcd"').mixed
    assert check_answer(SECRETS.singles[1], body, "5", '"5-abcd"').torn  # another secret's value


def soak_plan(seed: int) -> dict[str, Any]:
    """The schedule ``python -m bench.soak`` draws for 30 s of ``SECRETS`` and ``seed`` (it runs nothing)."""
    argv = ["--duration", "30s", "--seed", str(seed), "--secrets", str(len(SECRETS.names)), "--plan"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PLAN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def test_the_schedule_replays_from_its_seed_and_holds_every_disruption() -> None:
    plan = soak_plan(SEED)
    assert plan == soak_plan(SEED)
    assert plan != soak_plan(SEED + 1)
    assert plan["duration_s"] == 30
    assert plan["seed"] == SEED
    # every tick rotates one pair, user first, and one single secret; the ticks are what replays
    assert len(plan["ticks"]) == plan["rotation_ticks"] > 0
    pairs = {user: [user, password] for user, password in SECRETS.pairs}
    for _at, rotated in plan["ticks"]:
        assert len(rotated) == 3, rotated
        assert rotated[:2] == pairs[rotated[0]]
        assert rotated[2] in SECRETS.singles
    phases = [(start, end, kind) for start, end, kind in plan["phases"]]
    kinds = {kind for _, _, kind in phases}
    assert kinds >= {"unavailable", "resource_exhausted", "latency_spike", "corrupt_crc", "quota", "outage"}
    assert phases[-1][2] == "outage"
    assert phases[-1][1] == plan["faults_stop_s"]
    kills = plan["kills"]
    assert len(kills) >= 2
    assert all(at < plan["chaos_end_s"] for at, _restart_after in kills)
    assert plan["pubsub_outages"]
    assert plan["disk_fills"]
    for at, _restart_after in kills:  # an agent restarted onto a full volume could not write its token
        assert all(not (start - 4.0 <= at <= end + 0.5) for start, end in plan["disk_fills"])


# --------------------------------------------------------------------------------------------------
# 30 seconds of the real thing
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def soak() -> dict[str, Any]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--duration", "30s", "--seed", "1", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=SOAK_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()  # the soak unwinds on SIGTERM: agent and emulators stopped, tmpfs unmounted
        stdout, stderr = process.communicate(timeout=90)
        pytest.fail(f"the 30 s soak did not finish within {SOAK_TIMEOUT} s:\n{stderr[-3000:]}")
    assert stdout.strip(), f"the soak printed no result (exit {process.returncode}):\n{stderr[-3000:]}"
    document: dict[str, Any] = json.loads(stdout)
    document["exit_code"] = process.returncode
    document["stderr"] = stderr
    return document


def invariant(soak: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any]
    [found] = [inv for inv in soak["invariants"] if inv["name"].startswith(name)]
    return found


@pytest.mark.pubsub
@pytest.mark.timeout(480)
def test_thirty_seconds_under_fire_break_no_invariant(soak: dict[str, Any]) -> None:
    broken = [inv for inv in soak["invariants"] if not inv["ok"]]
    assert not broken, f"{broken}\n{soak['table']}\nlogs: {soak.get('work_dir')}"
    assert soak["exit_code"] == 0
    assert soak["ok"] is True


@pytest.mark.pubsub
@pytest.mark.timeout(480)
def test_no_read_was_torn_or_mixed_and_every_reader_saw_rotations(soak: dict[str, Any]) -> None:
    for name, tally in soak["observers"].items():
        assert tally["torn"] == 0, (name, tally["examples"])
        assert tally["mixed"] == 0, (name, tally["examples"])
        assert tally["rollbacks"] == 0, (name, tally["examples"])
        assert tally["reads"] > 0, name
    assert soak["rotations"]["made"] > 0
    observed = soak["rotations"]["observed"]
    for reader in ("files (..data snapshots)", "endpoint GET", "endpoint long-poll", "app reloads"):
        assert observed[reader] > 0, reader
    assert soak["app"]["reloads"] > 0
    assert soak["requests"]["served"] > 0
    assert soak["requests"]["failed_while_up"] == 0, soak["requests"]


@pytest.mark.pubsub
@pytest.mark.timeout(480)
def test_the_disruptions_happened_and_the_agent_converged_after_them(soak: dict[str, Any]) -> None:
    agent = soak["agent"]
    assert agent["kills"] >= 2
    assert agent["restarts"] >= agent["kills"]
    assert agent["unexpected_exits"] == []
    assert soak["pubsub"]["available"], soak["notes"]
    assert soak["pubsub"]["restarts"] >= 1
    assert soak["pubsub"]["events_connected_at_end"] == 1
    assert set(soak["faults"]["phases"]) >= {"unavailable", "resource_exhausted", "quota", "outage"}
    access = soak["faults"]["access_calls_by_status"]
    assert access.get("UNAVAILABLE", 0) > 0
    assert access.get("RESOURCE_EXHAUSTED", 0) > 0
    if os.geteuid() == 0 and soak["disk"]["fills"] == 0:
        pytest.fail(f"running as root but the volume was never filled: {soak['disk']}")
    if soak["disk"]["fills"]:
        assert agent["snapshot_write_failures"] > 0, "the full volume was never felt by the agent"
    convergence = soak["convergence"]
    assert convergence["seconds"] is not None, convergence
    assert convergence["seconds"] <= convergence["bound_s"]
    assert convergence["ready"] is True
    assert convergence["app_seconds"] is not None
    assert invariant(soak, "secret values in the agent's logs")["value"] == "0"
