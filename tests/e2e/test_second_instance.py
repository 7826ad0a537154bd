"""One agent per output directory: a second real ``run`` (or ``init``) on the directory of a running agent
is refused before it touches anything, and the first keeps serving with the token its clients read.

The agents of these tests listen on free ports (``agent_environment``), so nothing but the output directory
is shared: what stops the second agent is the lock on ``<output_dir>/..lock``, not a port conflict.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import requests

from tests.e2e.conftest import AgentProcess, Agents, Finished, Upstream, data_target, write_config

TOKEN_HEADER = "X-Secrets-Agent-Token"
VICTIM_TEXT = b"precious file: must stay as it is\n"


def config_for(tmp_path: Path, output_dir: Path, upstream: Upstream) -> Path:
    upstream.create("db-password", "hunter2-v1")
    return write_config(
        tmp_path / "agent.yaml",
        [{"name": "db-password", "ref": Upstream.ref("db-password")}],
        output_dir=str(output_dir),
    )


def start_serving(agents: Agents, config: Path) -> tuple[AgentProcess, str]:
    """``run``, once it serves; with the base URL of its endpoint (read from its log)."""
    agent = agents.start("run", "-c", config)
    agent.wait_for_log("run: serving", within=20)

    def port() -> int | None:
        for message in agent.messages():
            if match := re.search(r"local endpoint listening on http://127\.0\.0\.1:(\d+)", message):
                return int(match.group(1))
        return None

    return agent, f"http://127.0.0.1:{agent.wait_until(port, within=10, what='the endpoint port')}"


def read_secret(endpoint: str, output_dir: Path) -> requests.Response:
    """What a client of the agent does: the token from the shared volume, then the secret."""
    token = (output_dir / ".token").read_text().strip()
    return requests.get(f"{endpoint}/v1/secrets/db-password", headers={TOKEN_HEADER: token}, timeout=5)


def plain_lines(finished: Finished) -> list[str]:
    """What the program printed besides its JSON log records (the CLI's own error lines)."""
    return [line for line in finished.stderr.splitlines() if line.strip() and not line.startswith("{")]


def assert_refused(second: Finished, output_dir: Path, first: AgentProcess) -> None:
    assert second.returncode == 1, second.stderr
    assert plain_lines(second) == [
        f"secrets-agent: the output directory {output_dir} is in use by process {first.pid} (another "
        f"secrets-agent holds {output_dir / '..lock'}); stop it first, or give this one another output_dir "
        "(--output-dir)"
    ]
    assert "Traceback" not in second.stderr
    # Refused before anything else: it did not even bind its listeners or speak to the backend.
    assert not [m for m in second.messages() if "listening on" in m or "source:" in m]


def test_a_second_run_on_the_same_output_directory_is_refused_and_the_first_keeps_serving(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    config = config_for(tmp_path, output_dir, upstream)
    first, endpoint = start_serving(agents, config)
    assert read_secret(endpoint, output_dir).status_code == 200
    token_before = (output_dir / ".token").read_bytes()
    inode_before = os.stat(output_dir / ".token").st_ino
    snapshot_before = data_target(output_dir)
    accesses_before = upstream.calls("AccessSecretVersion")

    second = agents.run("run", "-c", config, within=20)

    assert_refused(second, output_dir, first)
    # Nothing of the first agent's was touched: same token file, same snapshot, no backend call.
    assert (output_dir / ".token").read_bytes() == token_before
    assert os.stat(output_dir / ".token").st_ino == inode_before
    assert data_target(output_dir) == snapshot_before
    assert upstream.calls("AccessSecretVersion") == accesses_before
    # And its clients still get in with the token they read from the volume.
    assert first.alive()
    response = read_secret(endpoint, output_dir)
    assert response.status_code == 200
    assert response.content == b"hunter2-v1"


def test_init_on_the_directory_of_a_running_agent_is_refused(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    config = config_for(tmp_path, output_dir, upstream)
    first, endpoint = start_serving(agents, config)
    snapshot_before = data_target(output_dir)
    notified_before = (output_dir / ".notified").read_bytes() if (output_dir / ".notified").exists() else None

    second = agents.run("init", "-c", config, within=20)

    assert_refused(second, output_dir, first)
    assert data_target(output_dir) == snapshot_before
    notified_after = (output_dir / ".notified").read_bytes() if (output_dir / ".notified").exists() else None
    assert notified_after == notified_before
    assert read_secret(endpoint, output_dir).status_code == 200


def test_the_lock_dies_with_its_agent_even_by_sigkill(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    config = config_for(tmp_path, output_dir, upstream)
    first, _ = start_serving(agents, config)
    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    assert (output_dir / "..lock").exists()  # left behind, and no obstacle: the kernel dropped the lock

    second, endpoint = start_serving(agents, config)
    response = read_secret(endpoint, output_dir)
    assert response.status_code == 200
    assert response.content == b"hunter2-v1"
    assert (output_dir / "..lock").read_text() == f"{second.pid}\n"
    assert oct(os.stat(output_dir / "..lock").st_mode & 0o777) == "0o600"


def test_a_link_planted_at_the_lock_file_is_replaced_and_its_target_left_alone(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    config = config_for(tmp_path, output_dir, upstream)
    victim = output_dir.parent / "victim"
    victim.write_bytes(VICTIM_TEXT)
    output_dir.mkdir()
    (output_dir / "..lock").symlink_to(victim)

    finished = agents.run("init", "-c", config, within=30)

    assert finished.returncode == 0, finished.stderr
    assert victim.read_bytes() == VICTIM_TEXT
    assert not (output_dir / "..lock").is_symlink()
    assert any("replacing" in m and "..lock" in m for m in finished.messages("WARNING"))


def test_a_hard_link_planted_at_the_lock_file_is_never_written_through(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    config = config_for(tmp_path, output_dir, upstream)
    victim = output_dir.parent / "victim"  # same filesystem as the output directory: a hard link can reach it
    victim.write_bytes(VICTIM_TEXT)
    output_dir.mkdir()
    os.link(victim, output_dir / "..lock")

    finished = agents.run("init", "-c", config, within=30)

    assert finished.returncode == 0, finished.stderr
    assert victim.read_bytes() == VICTIM_TEXT
    assert os.stat(output_dir / "..lock").st_ino != os.stat(victim).st_ino
