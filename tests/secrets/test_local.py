"""LocalSecretManager over real .env files: versions, states, etags, comments kept, atomic writes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from dotenv import dotenv_values

from agent.secrets import (
    ConcurrentModification,
    LocalSecretManager,
    SecretNotFound,
    SecretsError,
    SecretType,
    VersionNotEnabled,
)
from agent.secrets.localstate import LocalState, encode_sidecar
from testing.logs import logged_text
from tests.secrets.conftest import CALLER, audit_events

CANARY = "canary-4be2-local-value-never-logged"

HAND_WRITTEN = """\
# Local development secrets. Do not commit.
DB_PASSWORD=hunter2   # the dev database

export API_KEY="abc def"
MULTI="line one
line two"
# trailing comment
FLAG
"""


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(HAND_WRITTEN)
    return path


@pytest.fixture
def local(env_file: Path) -> LocalSecretManager:
    return LocalSecretManager(env_file, caller=CALLER)


def dotenv(path: Path) -> dict[str, str | None]:
    return dotenv_values(path, interpolate=False)


def text_of(path: Path) -> str:
    return path.read_text()


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_a_hand_written_env_file_is_valid_without_a_sidecar(local: LocalSecretManager) -> None:
    infos = await local.list_secrets()
    assert [i.secret_id for i in infos] == ["API_KEY", "DB_PASSWORD", "MULTI"]  # FLAG has no value
    assert all(i.secret_type is None for i in infos)
    assert await local.get_secret("DB_PASSWORD") == "hunter2"
    assert await local.get_secret("API_KEY", "1") == "abc def"
    assert await local.get_secret("MULTI") == "line one\nline two"
    versions = await local.list_versions("MULTI")
    assert [(v.version, v.state) for v in versions] == [("1", "ENABLED")]
    assert not local.sidecar.exists()  # reads write nothing


async def test_writes_keep_every_other_line_and_comment(local: LocalSecretManager, env_file: Path) -> None:
    await local.add_version("DB_PASSWORD", "n3w pass'word")
    await local.add_version("MULTI", "single line now")
    await local.create_secret("session", "s3ss10n", SecretType.SESSION_SECRET)
    assert text_of(env_file) == textwrap.dedent("""\
        # Local development secrets. Do not commit.
        DB_PASSWORD="n3w pass'word"

        export API_KEY="abc def"
        MULTI='single line now'
        # trailing comment
        FLAG
        session='s3ss10n'
        """)
    assert dotenv(env_file) == {
        "DB_PASSWORD": "n3w pass'word",
        "API_KEY": "abc def",
        "MULTI": "single line now",
        "FLAG": None,
        "session": "s3ss10n",
    }
    assert [(v.version, v.state) for v in await local.list_versions("DB_PASSWORD")] == [
        ("2", "ENABLED"),
        ("1", "ENABLED"),
    ]
    assert await local.get_secret("DB_PASSWORD", "1") == "hunter2"


async def test_new_files_are_private_and_existing_modes_are_kept(tmp_path: Path) -> None:
    fresh = LocalSecretManager(tmp_path / "new.env")
    await fresh.create_secret("a", "1", SecretType.API_KEY)
    assert stat.S_IMODE((tmp_path / "new.env").stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.sidecar.stat().st_mode) == 0o600
    assert fresh.sidecar.name == "new.env.versions.json"

    shared = tmp_path / "shared.env"
    shared.write_text("A=1\n")
    shared.chmod(0o640)
    await LocalSecretManager(shared).add_version("A", "2")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert names_in(tmp_path) == [
        "new.env",
        "new.env.versions.json",
        "shared.env",
        "shared.env.versions.json",
    ]  # no temporary files left behind


async def test_create_secret_records_type_labels_and_schedule(local: LocalSecretManager) -> None:
    first = await local.create_secret(
        "db", "pw", SecretType.DATABASE, labels={"team": "payments"}, annotations={"owner": "ops"}
    )
    assert (first.version, first.state) == ("1", "ENABLED")
    info = await local.get_secret_info("db")
    assert info.secret_type is SecretType.DATABASE
    assert dict(info.labels) == {"team": "payments", "secret-type": "database"}
    assert dict(info.annotations) == {"owner": "ops"}
    assert info.rotation_period == timedelta(days=90)
    assert info.create_time is not None
    assert info.next_rotation_time == info.create_time + timedelta(days=90)
    tls = await local.create_secret("cert", "PEM", SecretType.TLS_CERT)
    assert tls.version == "1"
    assert (await local.get_secret_info("cert")).rotation_period is None
    with pytest.raises(SecretsError) as excinfo:
        await local.create_secret("DB_PASSWORD", "x", SecretType.DATABASE)  # hand-written, exists
    assert excinfo.value.code == "ALREADY_EXISTS"
    with pytest.raises(SecretsError) as excinfo:
        await local.create_secret("bad id", "x", SecretType.DATABASE)
    assert excinfo.value.code == "INVALID_ARGUMENT"


async def test_disabled_latest_fails_and_the_env_carries_the_newest_enabled_value(
    local: LocalSecretManager, env_file: Path
) -> None:
    await local.add_version("DB_PASSWORD", "second")
    await local.disable_version("DB_PASSWORD", "2")
    with pytest.raises(VersionNotEnabled) as excinfo:
        await local.get_secret("DB_PASSWORD")
    assert excinfo.value.code == "FAILED_PRECONDITION"
    assert await local.get_secret("DB_PASSWORD", "1") == "hunter2"
    assert dotenv(env_file)["DB_PASSWORD"] == "hunter2"

    await local.disable_version("DB_PASSWORD", "1")
    assert "DB_PASSWORD" not in dotenv(env_file)  # nothing enabled: no line
    assert "# Local development secrets." in text_of(env_file)
    assert [(v.version, v.state) for v in await local.list_versions("DB_PASSWORD")] == [
        ("2", "DISABLED"),
        ("1", "DISABLED"),
    ]
    await local.enable_version("DB_PASSWORD", "2")
    assert dotenv(env_file)["DB_PASSWORD"] == "second"
    assert await local.get_secret("DB_PASSWORD") == "second"


async def test_destroyed_values_are_gone_from_both_files(local: LocalSecretManager, env_file: Path) -> None:
    await local.create_secret("token", CANARY, SecretType.OAUTH_TOKEN)
    await local.add_version("token", "replacement")
    encoded = base64.b64encode(CANARY.encode()).decode()
    assert encoded in text_of(local.sidecar)  # the history holds version 1 until it is destroyed
    await local.destroy_version("token", "1")
    assert CANARY not in text_of(env_file)
    assert encoded not in text_of(local.sidecar)
    sidecar = json.loads(text_of(local.sidecar))
    assert sidecar["secrets"]["token"]["versions"]["1"]["data"] is None
    with pytest.raises(VersionNotEnabled):
        await local.get_secret("token", "1")
    with pytest.raises(SecretsError) as excinfo:
        await local.enable_version("token", "1")
    assert excinfo.value.code == "FAILED_PRECONDITION"


async def test_a_value_edited_by_hand_is_a_new_version(local: LocalSecretManager, env_file: Path) -> None:
    await local.create_secret("db", "from-api", SecretType.DATABASE)
    write_text(env_file, text_of(env_file).replace("db='from-api'", "db=edited-by-hand"))
    assert await local.get_secret("db") == "edited-by-hand"
    assert [v.version for v in await local.list_versions("db")] == ["2", "1"]
    assert await local.get_secret("db", "1") == "from-api"
    # The type and labels survive the edit.
    assert (await local.get_secret_info("db")).secret_type is SecretType.DATABASE


async def test_missing_secrets_and_versions(local: LocalSecretManager) -> None:
    with pytest.raises(SecretNotFound) as excinfo:
        await local.get_secret("nope")
    assert str(excinfo.value).startswith("secret 'nope': NOT_FOUND:")
    with pytest.raises(SecretNotFound):
        await local.get_secret("DB_PASSWORD", "5")
    with pytest.raises(SecretNotFound):
        await local.add_version("nope", "x")


async def test_values_a_env_file_cannot_hold_are_refused_without_the_value(local: LocalSecretManager) -> None:
    for value in (b"\xff\xfe" + CANARY.encode(), f"{CANARY}\0".encode()):
        with pytest.raises(SecretsError) as excinfo:
            await local.add_version("DB_PASSWORD", value)
        assert excinfo.value.code == "INVALID_ARGUMENT"
        assert CANARY not in str(excinfo.value)
    assert await local.get_secret("DB_PASSWORD") == "hunter2"


async def test_annotations_are_guarded_by_the_etag(local: LocalSecretManager) -> None:
    await local.create_secret("jwt", "k", SecretType.JWT_SECRET)
    etag = (await local.get_secret_info("jwt")).etag
    updated = await local.update_annotations("jwt", {"lock": "me"}, etag=etag)
    assert updated.etag != etag
    assert dict(updated.annotations) == {"lock": "me"}
    with pytest.raises(ConcurrentModification):
        await local.update_annotations("jwt", {"lock": "other"}, etag=etag)
    assert (await local.get_secret_info("jwt")).annotations["lock"] == "me"
    # Adding a version does not move the secret's etag (as in Secret Manager).
    await local.add_version("jwt", "k2")
    assert (await local.get_secret_info("jwt")).etag == updated.etag


async def test_etag_race_between_managers_has_one_winner(env_file: Path) -> None:
    await LocalSecretManager(env_file).create_secret("race", "v", SecretType.API_KEY)
    etag = (await LocalSecretManager(env_file).get_secret_info("race")).etag
    racers = [LocalSecretManager(env_file, caller=f"racer {i}") for i in range(8)]
    results = await asyncio.gather(
        *(m.update_annotations("race", {"lock": m.caller}, etag=etag) for m in racers), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrentModification) for r in results if isinstance(r, BaseException))


async def test_concurrent_adds_from_two_processes_lose_nothing(env_file: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from agent.secrets import LocalSecretManager
        async def main():
            m = LocalSecretManager({str(env_file)!r})
            for i in range(8):
                await m.add_version("DB_PASSWORD", f"{{sys.argv[1]}}-{{i}}")
        asyncio.run(main())
    """)
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", script, tag, cwd=Path.cwd())
        for tag in "ab"
    ]
    assert [await p.wait() for p in procs] == [0, 0]
    versions = await LocalSecretManager(env_file).list_versions("DB_PASSWORD")
    assert [v.version for v in versions] == [str(n) for n in range(17, 0, -1)]
    assert "# trailing comment" in text_of(env_file)


def test_a_failed_write_leaves_both_files_intact(env_file: Path) -> None:
    """A real write failure: the file size limit (RLIMIT_FSIZE, root included) stops the new .env midway."""
    asyncio.run(LocalSecretManager(env_file).create_secret("big", "small", SecretType.API_KEY))
    sidecar = env_file.with_name(".env.versions.json")
    before = {p.name: p.read_bytes() for p in (env_file, sidecar)}
    script = textwrap.dedent(f"""
        import asyncio, resource, signal
        from agent.secrets import LocalSecretManager, SecretsError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
        try:
            asyncio.run(LocalSecretManager({str(env_file)!r}).add_version("big", "x" * 100_000))
        except SecretsError as e:
            print(e.code, e)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("UNAVAILABLE"), done
    assert "xxxx" not in done.stdout
    assert {p.name: p.read_bytes() for p in (env_file, sidecar)} == before
    assert names_in(env_file.parent) == [".env", ".env.versions.json"]


def test_readers_never_see_a_partial_file(env_file: Path) -> None:
    """While values of very different sizes are written, every read of the .env parses to a whole value."""
    values = ["a" * 50_000, "b", "c" * 20_000]
    asyncio.run(LocalSecretManager(env_file).create_secret("swap", values[0], SecretType.API_KEY))
    stop = threading.Event()
    seen: set[str | None] = set()

    def read_loop() -> None:
        while not stop.is_set():
            seen.add(dotenv(env_file).get("swap"))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        manager = LocalSecretManager(env_file)
        for round_ in range(20):
            asyncio.run(manager.add_version("swap", values[round_ % 3]))
    finally:
        stop.set()
        reader.join()
    assert seen <= set(values)
    assert seen


async def test_audit_events_and_no_value_in_logs(
    local: LocalSecretManager, logs: pytest.LogCaptureFixture
) -> None:
    await local.create_secret("db", CANARY, SecretType.DATABASE)
    await local.get_secret("db")
    await local.disable_version("db", "1")
    with pytest.raises(VersionNotEnabled):
        await local.get_secret("db")
    events = [(e["operation"], e["secret"], e["version"], e["result"]) for e in audit_events(logs)]
    assert events == [
        ("create", "db", "1", "ok"),
        ("access", "db", "1", "ok"),
        ("disable", "db", "1", "ok"),
        ("access", "db", "latest", "FAILED_PRECONDITION"),
    ]
    assert {(e["caller"], e["backend"]) for e in audit_events(logs)} == {(CALLER, "dotenv")}
    assert CANARY not in logged_text(logs)


def test_the_sidecar_is_refused_clearly_when_damaged(env_file: Path) -> None:
    env_file.with_name(".env.versions.json").write_text("{not json")
    with pytest.raises(SecretsError, match=r"\.env\.versions\.json: cannot read \(not valid JSON\)"):
        asyncio.run(LocalSecretManager(env_file).get_secret("DB_PASSWORD"))


async def test_rotate_secret_adds_a_new_version_through_the_rotation_engine(
    local: LocalSecretManager, env_file: Path
) -> None:
    await local.create_secret("enc", "initial-key-material", SecretType.ENCRYPTION_KEY)
    assert await local.rotate_secret("enc") == "2"
    rotated = await local.get_secret("enc")
    assert rotated != "initial-key-material"
    assert dotenv(env_file)["enc"] == rotated
    assert "# Local development secrets. Do not commit." in text_of(env_file)


async def test_a_link_planted_at_the_sidecar_is_not_read(tmp_path: Path, env_file: Path) -> None:
    """The sidecar is ours: a link planted in its place (to a host file another user wants to probe) is
    refused, never followed into an error message or a parse."""
    host_file = tmp_path / "host-secret.json"
    host_file.write_text('{"format": "secrets-agent-local/1", "secrets": {}}')
    (tmp_path / ".env.versions.json").symlink_to(host_file)
    manager = LocalSecretManager(env_file, caller=CALLER)
    with pytest.raises(SecretsError) as failed:
        await manager.get_secret("API_KEY")
    assert failed.value.code == "FAILED_PRECONDITION"
    assert ".env.versions.json: cannot read" in str(failed.value)


async def test_an_env_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.env"
    os.mkfifo(fifo)
    manager = LocalSecretManager(fifo, caller=CALLER)
    with pytest.raises(SecretsError) as failed:
        await asyncio.wait_for(manager.get_secret("API_KEY"), timeout=10)
    assert "cannot read" in str(failed.value)


async def test_a_linked_env_file_is_still_read(tmp_path: Path, env_file: Path) -> None:
    """The .env itself is the user's: a dotfiles repository may link it, and that keeps working."""
    linked = tmp_path / "linked.env"
    linked.symlink_to(env_file)
    assert (
        await LocalSecretManager(linked, caller=CALLER).get_secret("API_KEY") == dotenv(env_file)["API_KEY"]
    )


async def test_writes_never_go_through_a_link_planted_at_the_sidecar_or_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing the manager writes lands where a link it did not make points. A link already at the
    sidecar's path refuses the write with the read (nothing written anywhere); one planted there between
    the read and the write (another user of the directory does not take our lock) is replaced by a regular
    0600 sidecar; one planted at the name of a temporary file is skipped for another name and left alone.
    The victim outside the directory keeps its content and mode throughout.

    The ``.env`` itself is the user's: a link there (a dotfiles manager's) is followed to read it, and the
    first write replaces the link with a regular file of mode 0600 (the target's mode is not copied), with
    the target's lines and the new value; the target keeps its old content and is not written again (the
    dotfiles copy no longer follows the edits)."""
    victim = tmp_path / "victim.json"
    victim.write_text('{"precious": true}\n')
    victim.chmod(0o644)
    dotfiles = tmp_path / "dotfiles" / "env"
    dotfiles.parent.mkdir()
    dotfiles.write_text("API_KEY=from-dotfiles\n")
    dotfiles.chmod(0o644)
    project = tmp_path / "project"
    project.mkdir()
    env_file = project / ".env"
    env_file.symlink_to(dotfiles)
    manager = LocalSecretManager(env_file, caller=CALLER)
    sidecar = manager.sidecar

    def untouched() -> None:
        assert victim.read_text() == '{"precious": true}\n'
        assert mode_of(victim) == 0o644
        assert dotfiles.read_text() == "API_KEY=from-dotfiles\n"
        assert mode_of(dotfiles) == 0o644

    assert await manager.get_secret("API_KEY") == "from-dotfiles"  # read through the user's link

    # Planted before the call: the sidecar is not read through it, so nothing is written at all.
    sidecar.symlink_to(victim)
    with pytest.raises(SecretsError) as refused:
        await manager.add_version("API_KEY", "never-written")
    assert refused.value.code == "FAILED_PRECONDITION"
    assert "a symbolic link, not followed" in str(refused.value)
    untouched()
    assert sidecar.is_symlink()
    assert env_file.is_symlink()
    sidecar.unlink()

    # Planted in the window between reading the files and replacing the sidecar.
    def encode_then_plant(state: LocalState) -> dict[str, object]:
        sidecar.unlink(missing_ok=True)
        sidecar.symlink_to(victim)
        return encode_sidecar(state)

    monkeypatch.setattr("agent.secrets.local.encode_sidecar", encode_then_plant)
    await manager.create_secret("NEW", "first", SecretType.API_KEY)
    monkeypatch.undo()
    untouched()
    assert not sidecar.is_symlink()
    assert sidecar.is_file()
    assert mode_of(sidecar) == 0o600
    assert sorted(json.loads(sidecar.read_text())["secrets"]) == ["API_KEY", "NEW"]
    # The user's link is replaced by a regular file of our own; its target was only ever read.
    assert not env_file.is_symlink()
    assert env_file.is_file()
    assert mode_of(env_file) == 0o600
    assert dotenv(env_file) == {"API_KEY": "from-dotfiles", "NEW": "first"}

    # Planted at the temporary names: each is skipped for a fresh one, and the links are left as they are.
    # Named as write_atomically names them: ".<file>.<random hex>.tmp".
    planted = [project / "..env.planted.tmp", project / "..env.versions.json.planted.tmp"]
    for link in planted:
        link.symlink_to(victim)
    handed_out: list[str] = []
    real_token_hex = secrets.token_hex

    def predictable_then_fresh(nbytes: int) -> str:
        # Every other name is one a link was planted at: the first try of each file's temporary.
        handed_out.append("planted" if len(handed_out) % 2 == 0 else real_token_hex(nbytes))
        return handed_out[-1]

    monkeypatch.setattr(secrets, "token_hex", predictable_then_fresh)  # atomicfile's names
    await manager.add_version("NEW", "second")
    monkeypatch.undo()
    untouched()
    assert handed_out.count("planted") == 2  # both files' writes met a planted link first
    assert all(link.is_symlink() and link.readlink() == victim for link in planted)
    assert mode_of(sidecar) == 0o600
    assert mode_of(env_file) == 0o600
    assert await manager.get_secret("NEW") == "second"
    assert dotenv(env_file) == {"API_KEY": "from-dotfiles", "NEW": "second"}
    assert names_in(project) == [
        "..env.planted.tmp",
        "..env.versions.json.planted.tmp",
        ".env",
        ".env.versions.json",
    ]  # the planted links stay (not ours to remove), no temporary of ours is left
