"""Readers never see a torn file or a mixed snapshot, and a writer killed anywhere leaves one that a restarted
writer adopts. Real processes on a real tmpfs."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

from agent.config import SecretSpec
from agent.core.model import Snapshot
from agent.sinks.snapshot import SnapshotSink
from tests.sinks.helpers import internal_entries, read_consistent, snapshot, snapshot_dirs, spec

REPEAT = 300  # ~4 KiB per value: big enough that a torn write would show


def user(n: int) -> bytes:
    return f"user-{n:06d}|".encode() * REPEAT


def password(n: int) -> bytes:
    return f"pass-{n:06d}|".encode() * REPEAT


def specs() -> list[SecretSpec]:
    return [spec("username"), spec("password", file="db/password")]


def pair(n: int) -> Snapshot:
    return snapshot({"username": user(n), "password": password(n)}, version=str(n))


# A reader with no dependency on the agent: what an app does, as fast as it can, on another core.
READER = textwrap.dedent(
    r"""
    import json, os, re, select, sys

    root, repeat = sys.argv[1], int(sys.argv[2])
    ENV = re.compile(rb"PASSWORD='pass-(\d{6})\|[^']*'\nUSERNAME='user-(\d{6})\|[^']*'\n")
    stats = {"pairs": 0, "retries": 0, "singles": 0, "single_missing": 0, "versions": [], "errors": []}

    def read(path, dir_fd=None):
        fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def version(kind, data):
        n = int(data[5:11])
        if data != f"{kind}-{n:06d}|".encode() * repeat:
            raise AssertionError(f"torn {kind} file ({len(data)} bytes)")
        return n

    last = 0
    announced = False
    finishing = False  # stdin closed: every later read sees the writer's last snapshot
    while True:
        try:
            directory = os.open(os.path.join(root, "..data"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                u, p, env = (read(name, directory) for name in ("username", "db/password", "app.env"))
            finally:
                os.close(directory)
            nu, np_ = version(b"user".decode(), u), version("pass", p)
            match = ENV.search(env)
            if nu != np_ or match is None or {int(match[1]), int(match[2])} != {nu}:
                found = match and match.groups()
                raise AssertionError(f"mixed snapshot: user {nu}, password {np_}, env {found}")
            if nu < last:
                raise AssertionError(f"went back from {last} to {nu}")
            last = nu
            stats["pairs"] += 1
            if not stats["versions"] or stats["versions"][-1] != nu:
                stats["versions"].append(nu)
        except FileNotFoundError:
            stats["retries"] += 1  # a newer snapshot replaced the one we held: read again
        except AssertionError as error:
            stats["errors"].append(str(error))
        try:
            version("pass", read(os.path.join(root, "db", "password")))
            stats["singles"] += 1
        except FileNotFoundError:
            stats["single_missing"] += 1
        except AssertionError as error:
            stats["errors"].append(str(error))
        if not announced:
            print("ready", flush=True)
            announced = True
        if (stats["pairs"] + stats["retries"]) % 32 == 0 and select.select([sys.stdin], [], [], 0)[0]:
            if finishing:
                break  # the writer is done, and this reader has read after it was
            finishing = True  # the reads so far may predate the last swap: one more round
    print(json.dumps(stats), flush=True)
    """
)


def hammer(sink: SnapshotSink, reader: subprocess.Popen[str]) -> dict[str, Any]:
    """1000 rotations while ``reader`` reads; returns the reader's statistics."""
    assert reader.stdout is not None
    assert reader.stdin is not None
    try:
        assert reader.stdout.readline() == "ready\n"
        started = time.monotonic()
        for n in range(1, 1001):
            assert sink.write(pair(n)) is True
        elapsed = time.monotonic() - started
        reader.stdin.close()
        stats: dict[str, Any] = json.loads(reader.stdout.readline())
    finally:
        reader.kill()
    stats["elapsed"] = elapsed
    return stats


def test_reader_hammering_1000_rotations_sees_no_torn_file_and_no_mixed_snapshot(shm: Path) -> None:
    sink = SnapshotSink(shm, specs(), Path("app.env"))
    sink.write(pair(0))
    with subprocess.Popen(
        [sys.executable, "-c", READER, str(shm), str(REPEAT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as reader:
        stats = hammer(sink, reader)

    assert stats["errors"] == []
    assert stats["versions"][-1] == 1000
    assert len(stats["versions"]) > 20, "the reader did not overlap the rotations"
    assert stats["pairs"] > 500
    print(
        f"1000 rotations in {stats['elapsed']:.2f}s; reader: {stats['pairs']} consistent pairs, "
        f"{len(stats['versions'])} versions seen, {stats['retries']} retries, "
        f"{stats['singles']} single reads, {stats['single_missing']} missing mid-swap"
    )
    assert len(snapshot_dirs(shm)) == 1


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.sinks.snapshot import SnapshotSink
    from tests.sinks.test_crash import pair, specs

    root, rounds = Path(sys.argv[1]), int(sys.argv[2])
    sink = SnapshotSink(root, specs(), Path("app.env"))
    adopted = sink.adopt()
    versions = adopted.versions()
    print("adopted", versions.get("username", "-"), versions.get("password", "-"), flush=True)
    n = int(versions.get("username", "0"))
    for _ in range(rounds):
        n += 1
        sink.write(pair(n))
        print("wrote", n, flush=True)
    """
)


def start_writer(root: Path, rounds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(rounds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def expect_line(stream: IO[str] | None, pattern: str) -> re.Match[str]:
    assert stream is not None
    line = stream.readline()
    match = re.fullmatch(pattern, line.rstrip("\n"))
    assert match is not None, line
    return match


def on_disk_version(root: Path) -> int:
    """The version of the consistent snapshot on disk (asserting that it is consistent)."""
    username, password_, env = read_consistent(root, "username", "db/password", "app.env")
    n = int(username[5:11])
    assert (username, password_) == (user(n), password(n))
    assert f"USERNAME='user-{n:06d}|".encode() in env
    assert f"PASSWORD='pass-{n:06d}|".encode() in env
    assert (root / "username").read_bytes() == user(n)  # the user-visible links resolve
    assert (root / "db" / "password").read_bytes() == password(n)
    return n


def test_sigkill_at_random_points_of_100_rotations_leaves_a_snapshot_that_is_adopted(shm: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4)))
    started = time.monotonic()
    kills = interrupted = 0
    disk = 0
    # 100 rotations, and at least 3 kills that landed inside a write (about a quarter do), within a bound.
    while disk < 100 or (interrupted < 3 and kills < 150):
        writer = start_writer(shm, rounds=1000)
        adopted = expect_line(writer.stdout, r"adopted (\S+) (\S+)")
        expected = str(disk) if disk else "-"
        assert adopted.groups() == (expected, expected)  # both halves of the pair, at the on-disk version
        last = disk
        for _ in range(rng.randint(1, 6)):
            last = int(expect_line(writer.stdout, r"wrote (\d+)")[1])
        spin_until = time.perf_counter() + rng.uniform(0, 0.002)  # land anywhere inside the next write
        while time.perf_counter() < spin_until:
            pass
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert writer.stdout is not None
        reported = [int(n) for n in re.findall(r"wrote (\d+)", writer.stdout.read())]
        writer.stdout.close()
        last = max([last, *reported])
        kills += 1
        disk = on_disk_version(shm)
        assert disk in (last, last + 1)  # the last reported write, or one that finished unreported
        leftovers = [n for n in internal_entries(shm) if n not in ("..data", os.readlink(shm / "..data"))]
        interrupted += bool(leftovers)

    final = start_writer(shm, rounds=1)
    assert expect_line(final.stdout, r"adopted (\S+) (\S+)").groups() == (str(disk), str(disk))
    assert int(expect_line(final.stdout, r"wrote (\d+)")[1]) == disk + 1
    assert final.wait(timeout=60) == 0
    assert final.stdout is not None
    final.stdout.close()
    assert on_disk_version(shm) == disk + 1
    assert internal_entries(shm) == sorted(["..data", os.readlink(shm / "..data")])  # nothing stray
    assert SnapshotSink(shm, specs(), Path("app.env")).adopt().versions() == {
        "username": str(disk + 1),
        "password": str(disk + 1),
    }
    print(
        f"{kills} kills over {disk} rotations in {time.monotonic() - started:.2f}s; "
        f"{interrupted} left an interrupted write behind"
    )
    assert interrupted >= 3, "kills did not land inside writes: the test did not exercise recovery"
