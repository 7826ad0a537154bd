"""A hostile neighbour on the shared volume: links, FIFOs and whole snapshots planted in the output directory
before a real ``run`` / ``init`` starts, and a umask of 000.

Whoever can write into the output directory (another container of the pod) must not get the agent to
write where a link points, to read a host file through a link and serve it, to block on a FIFO, or to read
a whole file system; and nothing the agent creates may be open to everybody because the umask is 000.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from agent.core.model import crc32c
from tests.e2e.conftest import CANARY, AgentProcess, Agents, Upstream, read_file, write_config
from tests.e2e.test_endpoint_e2e import TOKEN_HEADER, bound_port

VICTIM_TEXT = b"precious host file: must stay as it is\n"
HOST_SECRET = b"host-only-content-4f1c9e: must never be served"
PLANTED = "..2024_01_01_00_00_00.000000000_abcdef"
"""A name of the agent's own snapshot pattern, planted by someone else."""


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def victim_file(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM_TEXT)
    victim.chmod(0o644)
    return victim


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == VICTIM_TEXT
    assert mode_of(victim) == 0o644


def config_for(tmp_path: Path, output_dir: Path, **settings: object) -> Path:
    secrets = [{"name": "db-password", "ref": Upstream.ref("db-password")}]
    return write_config(tmp_path / "agent.yaml", secrets, output_dir=str(output_dir), **settings)


def start_serving(agents: Agents, config: Path, *args: str) -> AgentProcess:
    agent = agents.start("run", "-c", config, *args, env={"SECRETS_AGENT_NOTIFY_DEBOUNCE": "0"})
    agent.wait_for_log("run: serving", within=15)
    return agent


def plant_snapshot(output_dir: Path, files: dict[str, bytes | Path]) -> Path:
    """A snapshot of the agent's layout that the agent did not write: each file is bytes or a link to a
    path; the manifest matches what the files hold (so only the checks of what is ours can refuse it)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    directory = output_dir / PLANTED
    directory.mkdir(mode=0o755)
    entries = {}
    for name, content in files.items():
        path = directory / name
        if isinstance(content, Path):
            path.symlink_to(content)
            data = content.read_bytes()
        else:
            path.write_bytes(content)
            data = content
        ref = Upstream.ref(name, "latest")
        entries[name] = {"ref": ref, "version": "7", "crc32c": crc32c(data), "file": name}
        (output_dir / name).symlink_to(f"..data/{name}")
    manifest = {"format": 1, "secrets": entries}
    (directory / "..manifest.json").write_text(json.dumps(manifest))
    (output_dir / "..data").symlink_to(PLANTED)
    return directory


@contextmanager
def umask(value: int) -> Iterator[None]:
    """The umask an agent started inside the block inherits."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# --------------------------------------------------------------------------------------------------
# Writes never follow a planted link
# --------------------------------------------------------------------------------------------------


def test_run_replaces_a_link_planted_at_the_token_and_leaves_its_target_alone(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    victim = victim_file(tmp_path)
    output_dir.mkdir(parents=True)
    (output_dir / ".token").symlink_to(victim)

    agent = start_serving(agents, config_for(tmp_path, output_dir))
    endpoint = bound_port(agent, r"local endpoint listening on http://127\.0\.0\.1:(\d+)")

    assert_untouched(victim)
    token_file = output_dir / ".token"
    assert not token_file.is_symlink()
    assert mode_of(token_file) == 0o440
    headers = {TOKEN_HEADER: token_file.read_text().strip()}
    answer = requests.get(f"http://127.0.0.1:{endpoint}/v1/secrets/db-password", headers=headers, timeout=5)
    assert answer.content == b"hunter2"
    assert agent.stop() == 0


def test_init_replaces_a_link_planted_at_the_record_of_what_the_app_was_told(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    victim = victim_file(tmp_path)
    output_dir.mkdir(parents=True)
    (output_dir / ".notified").symlink_to(victim)

    result = agents.run("init", "-c", config_for(tmp_path, output_dir))

    assert result.returncode == 0, result.stderr
    assert_untouched(victim)
    record = output_dir / ".notified"
    assert not record.is_symlink()
    assert mode_of(record) == 0o600
    assert set(json.loads(record.read_bytes())["versions"]) == {"db-password", "canary"}


def test_run_does_not_block_on_a_fifo_planted_at_the_record(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    output_dir.mkdir(parents=True)
    os.mkfifo(output_dir / ".notified")  # reading it would wait forever for a writer

    agent = start_serving(agents, config_for(tmp_path, output_dir))

    assert read_file(output_dir, "db-password") == b"hunter2"
    assert agent.stop() == 0


# --------------------------------------------------------------------------------------------------
# Adoption accepts only what the agent could have written
# --------------------------------------------------------------------------------------------------


def test_a_planted_snapshot_linking_to_a_host_file_is_not_adopted_nor_served(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(HOST_SECRET)
    plant_snapshot(output_dir, {"db-password": host_file})
    upstream.set_faults({"AccessSecretVersion": {"unavailable": 1.0}})  # only adoption could serve it

    config = config_for(tmp_path, output_dir, poll_interval="0.2s")
    agent = start_serving(agents, config, "--timeout", "1s")
    endpoint = bound_port(agent, r"local endpoint listening on http://127\.0\.0\.1:(\d+)")
    headers = {TOKEN_HEADER: (output_dir / ".token").read_text().strip()}
    answer = requests.get(f"http://127.0.0.1:{endpoint}/v1/secrets/db-password", headers=headers, timeout=5)

    assert answer.status_code != 200
    assert HOST_SECRET not in answer.content
    assert any("cannot adopt the existing snapshot" in m for m in agent.messages("WARNING"))
    for current, _, names in os.walk(output_dir):
        for name in names:
            path = Path(current) / name
            if not path.is_symlink() and path.is_file():
                assert HOST_SECRET not in path.read_bytes(), path

    upstream.clear_faults()
    agent.wait_until(lambda: read_file(output_dir, "db-password") == b"hunter2", what="the real value")
    assert host_file.read_bytes() == HOST_SECRET
    assert agent.stop() == 0


def test_a_planted_snapshot_directory_that_is_a_link_is_not_read(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "db-password")  # reading anything there would block the agent for good
    output_dir.mkdir(parents=True)
    (output_dir / PLANTED).symlink_to(elsewhere)
    (output_dir / "..data").symlink_to(PLANTED)

    agent = start_serving(agents, config_for(tmp_path, output_dir))

    assert read_file(output_dir, "db-password") == b"hunter2"
    assert any("cannot adopt the existing snapshot" in m for m in agent.messages("WARNING"))
    assert stat.S_ISFIFO(os.lstat(elsewhere / "db-password").st_mode)
    assert agent.stop() == 0


def test_a_data_link_to_the_root_of_the_file_system_is_refused_without_reading_it(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    output_dir.mkdir(parents=True)
    (output_dir / "..data").symlink_to("/")

    result = agents.run("init", "-c", config_for(tmp_path, output_dir))

    # The link is not ours: nothing adopted, nothing read, and the agent refuses to manage the directory.
    assert result.returncode != 0
    assert "not a snapshot directory of ours" in result.stderr
    assert os.readlink(output_dir / "..data") == "/"


def test_a_planted_snapshot_of_another_user_is_not_adopted(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    upstream.create("db-password", "hunter2")
    directory = plant_snapshot(output_dir, {"db-password": b"planted-value"})
    os.chown(directory, 65534, 65534)
    upstream.set_faults({"AccessSecretVersion": {"unavailable": 1.0}})

    agent = start_serving(agents, config_for(tmp_path, output_dir), "--timeout", "1s")
    endpoint = bound_port(agent, r"local endpoint listening on http://127\.0\.0\.1:(\d+)")
    headers = {TOKEN_HEADER: (output_dir / ".token").read_text().strip()}
    answer = requests.get(f"http://127.0.0.1:{endpoint}/v1/secrets/db-password", headers=headers, timeout=5)

    assert answer.status_code != 200
    assert b"planted-value" not in answer.content
    assert any("owned by uid 65534" in m for m in agent.messages("WARNING"))
    assert agent.stop() == 0


# --------------------------------------------------------------------------------------------------
# Explicit modes whatever the umask
# --------------------------------------------------------------------------------------------------


def test_under_umask_000_run_creates_every_directory_and_file_with_its_own_mode(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    deep = output_dir / "pods" / "app"
    env_file = tmp_path / "envs" / "deep" / "app.env"
    config = config_for(tmp_path, deep, env_file=str(env_file))

    with umask(0):
        agent = start_serving(agents, config)
    agent.wait_until(lambda: env_file.exists(), what="the env file outside the output directory")

    for directory in (output_dir, output_dir / "pods", deep, env_file.parent, env_file.parent.parent):
        assert mode_of(directory) == 0o755, directory
    assert mode_of(deep / ".token") == 0o440
    assert mode_of(env_file) == 0o440
    snapshot = deep / os.readlink(deep / "..data")
    assert mode_of(snapshot) == 0o755
    assert mode_of(snapshot / "db-password") == 0o440
    assert agent.stop() == 0


def test_under_umask_000_init_creates_the_output_directory_and_its_parents_0755(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db-password", "hunter2")
    deep = output_dir / "pods" / "app"

    with umask(0):
        result = agents.run("init", "-c", config_for(tmp_path, deep))

    assert result.returncode == 0, result.stderr
    for directory in (output_dir, output_dir / "pods", deep):
        assert mode_of(directory) == 0o755, directory
    assert mode_of(deep / ".notified") == 0o600
    assert CANARY.encode() == read_file(deep, "canary")


# --------------------------------------------------------------------------------------------------
# What is adopted is redacted from the logs at once
# --------------------------------------------------------------------------------------------------

ADOPTED_VALUE = f"{CANARY}-adopted-v1"
"""A value a previous agent left on disk; also a valid local name, so that it can be pasted as one."""


def test_adopted_values_are_redacted_from_the_logs_while_the_bootstrap_still_retries(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """A restart while Secret Manager is unreachable serves the last-known-good files of the previous run
    until the bootstrap fetches them again (here it never does: its timeout is long). A value pasted by
    mistake as the name of another secret is quoted by each retry warning of that bootstrap. The adopted
    values are registered with the log redaction net as soon as they are adopted, so the line shows
    ``[REDACTED]``: nothing else registers them before the bootstrap ends."""
    upstream.create("db-password", ADOPTED_VALUE)
    assert agents.run("init", "-c", config_for(tmp_path, output_dir)).returncode == 0
    upstream.set_faults({"AccessSecretVersion": {"unavailable": 1.0}})
    secrets: list[dict[str, object]] = [
        {"name": "db-password", "ref": Upstream.ref("db-password")},
        {"name": ADOPTED_VALUE, "ref": Upstream.ref("pasted"), "required": False},
    ]
    config = write_config(tmp_path / "restarted.yaml", secrets, output_dir=str(output_dir))

    agent = agents.start("run", "-c", config, "--timeout", "5m")
    agent.wait_for_log("adopted 2 secrets already in", severity="INFO")  # db-password and the canary

    def pasted_retry() -> str | None:
        known = ("fetching db-password ", "fetching canary ")
        retries = [m for m in agent.messages("WARNING") if m.startswith("fetching ")]
        return next((m for m in retries if not m.startswith(known)), None)

    line = agent.wait_until(pasted_retry, within=15, what="a retry warning of the pasted secret")
    assert line.startswith("fetching [REDACTED] failed (UNAVAILABLE), retry"), line
    assert not any("run: serving" in m for m in agent.messages("INFO"))  # still in the bootstrap
    assert read_file(output_dir, "db-password") == ADOPTED_VALUE.encode()  # served: last-known-good
    assert ADOPTED_VALUE not in agent.stdout() + agent.stderr()  # the agents fixture checks the canary too
    assert agent.stop() == 0
