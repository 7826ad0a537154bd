"""Pacing rotations to the fleet (``agent.rotation.pacing``): the arithmetic as tables, the pacer's wait and
its stop, and ``rotate`` / ``rotate --listen`` as real processes against the emulator, whose recorded
AddSecretVersion calls show the spacing. Lower bounds only: how fast a machine is never fails a test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import FleetConfig
from agent.rotation.config import parse_rotation_config
from agent.rotation.lock import ANNOTATION
from agent.rotation.pacing import (
    MIN_GAP_SECONDS,
    ROTATIONS_PER_MINUTE,
    WRITES_PER_ROTATION,
    Pacer,
    Pacing,
    Stopped,
    duration,
    schedule,
)
from agent.secrets.interface import SecretsBackend
from agent.secrets.manager import SecretManager
from agent.secrets.types import SecretType
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from testing.pubsub_emulator import PubSubChannel
from tests.rotation.helpers_engine import (
    CANARY,
    PROJECT,
    Programs,
    admin,
    advance_clock,
    command_settings,
    parse_time,
    write_calls,
)
from tests.rotation.test_listen import Listener

OLD = f"{CANARY}-old-paced-value"
TIMEOUT = 60
WRITE_QUOTA_PER_MINUTE = 600
"""Secret Manager's write quota per project."""


def pacing(size: int, access_per_minute: int) -> Pacing:
    return Pacing(FleetConfig(size=size, access_per_minute=access_per_minute))


# --------------------------------------------------------------------------------------------------
# The arithmetic
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "access", "rotations", "spacing", "said"),
    [
        (
            10_000,
            72_000,
            20,
            60 * 10_000 / 72_000,
            "pacing rotations 8.3 s apart for a fleet of 10,000 pods at 72,000 access calls/min: "
            "20 rotations take about 2 min 47 s",
        ),
        (
            10_000,
            45_000,
            20,
            60 * 10_000 / 45_000,
            "pacing rotations 13.3 s apart for a fleet of 10,000 pods at 45,000 access calls/min: "
            "20 rotations take about 4 min 27 s",
        ),
        (
            2_000,
            60_000,
            3,
            2.0,
            "pacing rotations 2.0 s apart for a fleet of 2,000 pods at 60,000 access calls/min: "
            "3 rotations take about 6.0 s",
        ),
    ],
)
def test_the_spacing_is_the_fleets_fetch_spread_and_the_total_is_said(
    size: int, access: int, rotations: int, spacing: float, said: str
) -> None:
    paced = pacing(size, access)

    assert paced.spacing == pytest.approx(spacing)
    # The agents' event delay spreads one rotation's fetches over the same window.
    assert paced.fetch_spread == pytest.approx(
        FleetConfig(size=size, access_per_minute=access).event_spread_seconds()
    )
    assert paced.notable(rotations)
    assert paced.describe(rotations) == said
    assert paced.total_seconds(rotations) == pytest.approx(rotations * spacing)


def test_the_default_fleet_is_not_visibly_paced_but_keeps_the_write_floor() -> None:
    paced = Pacing()  # fleet.size 1, 45,000 access calls a minute

    assert paced.fetch_spread == pytest.approx(60 / 45_000)  # 1.3 ms
    assert paced.spacing == MIN_GAP_SECONDS
    assert not paced.notable(20)
    assert paced.notable(ROTATIONS_PER_MINUTE + 1)  # the write quota makes some of them wait
    assert "at most 25 a minute (the write quota)" in paced.describe(60)


@pytest.mark.parametrize("spacing", [MIN_GAP_SECONDS, 1.0, 8.3])
def test_no_minute_holds_more_writes_than_half_the_write_quota(spacing: float) -> None:
    starts = schedule(200, spacing)

    assert min(gaps(starts)) >= spacing - 1e-9
    for first in starts:
        in_a_minute = sum(first <= start < first + 60 for start in starts)
        assert in_a_minute <= ROTATIONS_PER_MINUTE
        assert in_a_minute * WRITES_PER_ROTATION <= WRITE_QUOTA_PER_MINUTE / 2


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.1, "0.1 s"), (8.333, "8.3 s"), (59.96, "1 min 0 s"), (166.67, "2 min 47 s"), (3900, "1 h 5 min")],
)
def test_durations_read_like_a_person_would_say_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_the_rotation_config_reads_the_agents_fleet_section() -> None:
    config = parse_rotation_config({"fleet": {"size": 10_000, "access_per_minute": 72_000}})

    assert config.fleet == FleetConfig(size=10_000, access_per_minute=72_000)
    assert parse_rotation_config({}).fleet == FleetConfig()


# --------------------------------------------------------------------------------------------------
# The pacer
# --------------------------------------------------------------------------------------------------


async def test_a_turn_comes_a_spacing_after_the_last_version_added() -> None:
    pacer = Pacer(pacing(size=300, access_per_minute=60_000))  # 0.3 s
    await pacer.turn("a")  # the first never waits
    pacer.added()
    added = time.monotonic()

    await pacer.turn("b")

    assert time.monotonic() - added >= 0.3


async def test_a_stop_during_the_wait_ends_it_and_the_rotation_is_not_counted() -> None:
    stop = asyncio.Event()
    pacer = Pacer(pacing(size=100_000, access_per_minute=60_000), stop)  # 100 s
    await pacer.turn("a")
    pacer.added()
    waiting = asyncio.ensure_future(pacer.turn("b"))
    await asyncio.sleep(0)  # the turn is now waiting
    assert not waiting.done()

    stop.set()

    with pytest.raises(Stopped):
        await asyncio.wait_for(waiting, TIMEOUT)
    with pytest.raises(Stopped):  # and no later turn starts either
        await pacer.turn("c")


# --------------------------------------------------------------------------------------------------
# rotate, as a process
# --------------------------------------------------------------------------------------------------


def env_for(emulator: EmulatorEndpoints) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_AGENT_", "PUBSUB_"))}
    env["SECRET_MANAGER_EMULATOR_HOST"] = emulator.grpc_target
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args, "--project", PROJECT]


def run(emulator: EmulatorEndpoints, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env=env_for(emulator), capture_output=True, text=True, timeout=TIMEOUT
    )


def logged(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def adds(emulator: EmulatorEndpoints) -> list[tuple[str, float]]:
    """The AddSecretVersion calls the emulator answered since its log was cleared: (secret, time)."""
    calls = admin(emulator, "GET", "/calls?limit=1000")["calls"]
    return [
        (str(call["resource"]).rsplit("/", 1)[-1], parse_time(str(call["time"])).timestamp())
        for call in calls
        if call["method"] == "AddSecretVersion" and call["result"] == "OK"
    ]


def rotated(secret: str) -> Callable[[dict[str, Any]], bool]:
    """Finds the engine's line saying ``secret`` was rotated."""
    return lambda line: line.get("secret") == secret and line.get("result") == "rotated"


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def seed(sm: SecretsBackend, *names: str) -> None:
    for name in names:
        await sm.create_secret(name, OLD, SecretType.ENCRYPTION_KEY)


def results(stdout: str) -> dict[str, str]:
    """Secret -> result, from ``--output json``."""
    return {str(r["secret"]): str(r["result"]) for r in json.loads(stdout)["results"]}


def planned(table: str) -> list[str]:
    """The RESULT column of a dry run's table (its VERSION is one word)."""
    return [line.split()[3] for line in table.splitlines()[1:] if line.strip()]


async def test_rotate_all_starts_each_rotation_a_spacing_after_the_last_new_version(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await seed(sm, "alpha", "bravo", "charlie")
    admin(emulator, "POST", "/calls:clear")
    spacing = 60 * 2000 / 60_000  # 2 s

    done = run(
        emulator, "rotate", "all", "--fleet-size", "2000", "--access-per-minute", "60000", "--output", "json"
    )

    assert done.returncode == 0, done.stderr
    assert results(done.stdout) == {"alpha": "rotated", "bravo": "rotated", "charlie": "rotated"}
    added = adds(emulator)
    assert [secret for secret, _ in added] == ["alpha", "bravo", "charlie"]  # the order of the table
    times = [moment for _, moment in added]
    assert all(gap >= spacing for gap in gaps(times)), gaps(times)
    assert times[-1] - times[0] >= 2 * spacing
    said = [line for line in logged(done.stderr) if line["logger"] == "agent.rotation.pacing"]
    assert [line["message"] for line in said] == [
        "pacing rotations 2.0 s apart for a fleet of 2,000 pods at 60,000 access calls/min: "
        "3 rotations take about 6.0 s"
    ]
    assert (said[0]["fleet_size"], said[0]["spacing_seconds"], said[0]["rotations"]) == (2000, 2.0, 3)
    assert CANARY not in done.stdout + done.stderr


async def test_a_failed_rotation_does_not_reset_the_schedule_and_its_rollback_counts(
    emulator: EmulatorEndpoints, sm: SecretsBackend, programs: Programs, tmp_path: Path
) -> None:
    for name in ("first", "refused", "last"):
        await sm.create_secret(name, OLD, SecretType.API_KEY)
    config = tmp_path / "rotation.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "secrets": {
                    "first": command_settings(programs),
                    "refused": command_settings(programs, validate=programs.reject()),
                    "last": command_settings(programs),
                }
            }
        )
    )
    admin(emulator, "POST", "/calls:clear")
    spacing = 60 * 1000 / 60_000  # 1 s

    done = run(
        emulator, "rotate", "first", "refused", "last", "-c", str(config),
        "--fleet-size", "1000", "--access-per-minute", "60000", "--output", "json",
    )  # fmt: skip

    assert done.returncode == 1, done.stderr  # one was rolled back
    assert results(done.stdout) == {"first": "rotated", "refused": "rolled-back", "last": "rotated"}
    added = adds(emulator)
    # The refused value, then the old value added again: the fleet fetches both.
    assert [secret for secret, _ in added] == ["first", "refused", "refused", "last"]
    times = [moment for _, moment in added]
    assert times[1] - times[0] >= spacing
    assert times[3] - times[2] >= spacing  # counted from the rollback's version, not from a reset
    assert CANARY not in done.stdout + done.stderr


async def test_dry_run_reports_the_plan_and_its_time_without_waiting(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await seed(sm, "alpha", "bravo", "charlie")
    before = write_calls(emulator)
    # 60,000,000 s apart: a dry run that waited would never end.
    huge = ("--fleet-size", "1000000", "--access-per-minute", "1")

    text = run(emulator, "rotate", "--dry-run", "all", *huge)
    as_json = run(emulator, "rotate", "--dry-run", "all", *huge, "--output", "json")
    default = run(emulator, "rotate", "--dry-run", "all")

    assert text.returncode == 0, text.stderr
    table, _, plan = text.stdout.partition("\n\n")
    assert planned(table) == ["planned"] * 3
    assert plan.strip() == (
        "pacing rotations 16666 h 40 min apart for a fleet of 1,000,000 pods at 1 access calls/min: "
        "3 rotations take about 50000 h 0 min"
    )
    document = json.loads(as_json.stdout)
    assert document["pacing"] == {
        "fleet_size": 1_000_000,
        "access_per_minute": 1,
        "spacing_seconds": 60_000_000.0,
        "rotations": 3,
        "total_seconds": 180_000_000.0,
    }
    assert "pacing" not in default.stdout  # the default fleet: no visible pacing, nothing said
    assert write_calls(emulator) == before  # a plan writes nothing


async def test_the_config_fleet_section_paces_and_the_flags_override_it(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    await seed(sm, "alpha", "bravo")
    config = tmp_path / "rotation.yaml"
    config.write_text(yaml.safe_dump({"fleet": {"size": 2000, "access_per_minute": 60_000}}))

    from_config = run(emulator, "rotate", "--dry-run", "all", "-c", str(config))
    overridden = run(emulator, "rotate", "--dry-run", "all", "-c", str(config), "--fleet-size", "4000")

    assert from_config.returncode == 0, from_config.stderr
    assert (
        "pacing rotations 2.0 s apart for a fleet of 2,000 pods at 60,000 access calls/min"
        in from_config.stdout
    )
    assert overridden.returncode == 0, overridden.stderr
    assert (
        "pacing rotations 4.0 s apart for a fleet of 4,000 pods at 60,000 access calls/min"
        in overridden.stdout
    )


async def test_a_bad_fleet_value_exits_2_naming_it_and_touches_nothing(
    emulator: EmulatorEndpoints, sm: SecretsBackend, tmp_path: Path
) -> None:
    await seed(sm, "alpha")
    before = write_calls(emulator)
    config = tmp_path / "rotation.yaml"
    config.write_text(yaml.safe_dump({"fleet": {"size": 0, "access_per_minte": 45_000}}))

    in_file = run(emulator, "rotate", "all", "-c", str(config))
    in_flag = run(emulator, "rotate", "all", "--access-per-minute", "lots")

    assert in_file.returncode == 2, in_file.stderr
    assert f"{config}: fleet.size: expected an integer of at least 1, got 0" in in_file.stderr
    assert "fleet.access_per_minte: unknown key (did you mean 'access_per_minute'?)" in in_file.stderr
    assert in_flag.returncode == 2, in_flag.stderr
    assert "--access-per-minute:" in in_flag.stderr
    assert "Traceback" not in in_file.stderr + in_flag.stderr
    assert write_calls(emulator) == before


class Rotate:
    """A ``rotate`` process left running; its stderr (JSON lines) read as it comes."""

    def __init__(self, emulator: EmulatorEndpoints, *args: str) -> None:
        self.listener = Listener(command(*args), env_for(emulator))

    def wait_for(self, what: str, secret: str, result: str) -> dict[str, Any]:
        return self.listener.wait_for(
            what,
            lambda line: (
                line.get("logger") == "agent.rotation.engine"
                and line.get("secret") == secret
                and line.get("result") == result
            ),
        )

    def terminate(self) -> tuple[int, str]:
        process = self.listener.process
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=TIMEOUT)  # the table is small: it fits in the pipe
        assert process.stdout is not None
        stdout = process.stdout.read()
        return self.listener.stop(), stdout


async def test_sigterm_during_the_pacing_wait_stops_between_rotations(
    emulator: EmulatorEndpoints, sm: SecretsBackend
) -> None:
    await seed(sm, "alpha", "bravo", "charlie")
    # 100 s apart: once alpha is rotated, bravo waits for its turn.
    rotate = Rotate(
        emulator,
        "rotate",
        "all",
        "--fleet-size",
        "100000",
        "--access-per-minute",
        "60000",
        "--output",
        "json",
    )
    rotate.wait_for("alpha rotated", "alpha", "rotated")

    code, stdout = rotate.terminate()

    assert code == 1  # not everything asked was done
    assert results(stdout) == {"alpha": "rotated", "bravo": "stopped", "charlie": "stopped"}
    assert "not started: rotate was stopped (SIGTERM/SIGINT); nothing was changed" in stdout
    # Recorded as far as it went: alpha's new version, no lock left anywhere.
    assert {v.version for v in await sm.list_versions("alpha")} == {"1", "2"}
    for name in ("bravo", "charlie"):
        assert {v.version for v in await sm.list_versions(name)} == {"1"}
    for name in ("alpha", "bravo", "charlie"):
        assert ANNOTATION not in (await sm.get_secret_info(name)).annotations
    status = run(emulator, "rotation", "status", "--output", "json")
    assert status.returncode == 0, status.stderr
    shown = {row["secret"]: row for row in json.loads(status.stdout)["secrets"]}
    assert {name: row["current_version"] for name, row in shown.items()} == {
        "alpha": "2",
        "bravo": "1",
        "charlie": "1",
    }
    assert all(row["note"] is None for row in shown.values()), shown
    # The next run carries on with the rest.
    again = run(emulator, "rotate", "bravo", "charlie", "--output", "json")
    assert again.returncode == 0, again.stderr
    assert results(again.stdout) == {"bravo": "rotated", "charlie": "rotated"}
    assert CANARY not in stdout + "".join(rotate.listener.raw)


# --------------------------------------------------------------------------------------------------
# rotate --listen
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def upstream(pubsub: PubSubChannel) -> Iterator[EmulatorEndpoints]:
    """Our Secret Manager emulator, started after PUBSUB_EMULATOR_HOST is set so that it publishes events."""
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as endpoints:
        yield endpoints


@pytest.mark.pubsub
async def test_listen_paces_secret_rotate_events_that_arrive_together(
    upstream: EmulatorEndpoints, pubsub: PubSubChannel, tmp_path: Path
) -> None:
    async with SecretManager(PROJECT, endpoint=upstream.grpc_target, topics=[pubsub.topic]) as sm:
        await seed(sm, "alpha", "bravo", "charlie")  # 180 days: all fall due at once
    config = tmp_path / "rotation.yaml"
    config.write_text(
        yaml.safe_dump({"topics": [pubsub.topic], "fleet": {"size": 1000, "access_per_minute": 60_000}})
    )
    spacing = 1.0
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_AGENT_")}
    env["SECRET_MANAGER_EMULATOR_HOST"] = upstream.grpc_target
    listener = Listener(
        [sys.executable, "-m", "agent", "rotate", "--listen", "--config", str(config), "--project", PROJECT],
        env,
    )
    try:
        listener.wait_for(
            "listening line", lambda line: str(line["message"]).startswith("listening for SECRET_ROTATE")
        )
        admin(upstream, "POST", "/calls:clear")
        fired = advance_clock(upstream, 181 * 86400)
        assert fired["rotations_fired"] == 3
        for name in ("alpha", "bravo", "charlie"):
            listener.wait_for(f"{name} rotated", rotated(name))
    finally:
        code = listener.stop()

    assert code == 0
    added = adds(upstream)
    assert sorted(secret for secret, _ in added) == ["alpha", "bravo", "charlie"]
    times = [moment for _, moment in added]
    assert all(gap >= spacing for gap in gaps(times)), gaps(times)
    assert CANARY not in "".join(listener.raw)
