"""``secrets-agent dev`` end to end: a watched ``.env`` file, the outputs of ``run``, the default debounce."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dotenv import dotenv_values

from tests.e2e.conftest import CANARY, AgentProcess, Agents, read_file, write_config

EDIT_DEADLINE = 1.0
"""What the issue promises: an edit of ``.env`` is in the outputs within a second."""


def outputs_show(output_dir: Path, db_password: str, api_key: str) -> bool:
    """Both files and the env file hold these values."""
    if read_file(output_dir, "db-password") != db_password.encode():
        return False
    if read_file(output_dir, "api-key") != api_key.encode():
        return False
    env = dotenv_values(output_dir / "app.env") if (output_dir / "app.env").exists() else {}
    return env.get("DB_PASSWORD") == db_password and env.get("API_KEY") == api_key


def wait_for_edit(
    agent: AgentProcess, output_dir: Path, db_password: str, api_key: str, edited: float
) -> float:
    agent.wait_until(
        lambda: outputs_show(output_dir, db_password, api_key),
        within=EDIT_DEADLINE,
        what=f"the edit in the outputs within {EDIT_DEADLINE}s",
    )
    return time.monotonic() - edited


def test_editing_dotenv_updates_the_files_and_the_env_file_within_a_second(
    agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DB_PASSWORD=first-password\nAPI_KEY='first key'\nCANARY={CANARY}\n")
    config = write_config(
        tmp_path / "agent.yaml",
        [
            {"name": "db-password", "ref": "projects/agent-e2e-tests/secrets/db-password"},
            {"name": "api-key", "ref": "projects/agent-e2e-tests/secrets/api-key"},
        ],
        output_dir=str(output_dir),
        env_file="app.env",
    )
    agent = agents.start("dev", "-c", config, "--dotenv", dotenv)
    agent.wait_for_log("dev: serving 3 of 3", within=15)
    assert outputs_show(output_dir, "first-password", "first key")

    # An editor's save: a new file renamed over the old one.
    replacement = tmp_path / ".env.swp"
    replacement.write_text(f"DB_PASSWORD='second # password'\nAPI_KEY='first key'\nCANARY={CANARY}\n")
    edited = time.monotonic()
    os.rename(replacement, dotenv)
    renamed = wait_for_edit(agent, output_dir, "second # password", "first key", edited)

    # A save in place (write over the same inode).
    edited = time.monotonic()
    dotenv.write_text(f'DB_PASSWORD="third\\npassword"\nAPI_KEY=second-key\nCANARY={CANARY}\n')
    in_place = wait_for_edit(agent, output_dir, "third\npassword", "second-key", edited)
    print(f"edit to outputs: rename {renamed:.2f}s, in place {in_place:.2f}s")

    # A key deleted by mistake: its file keeps the last value, with a warning; nothing is removed.
    dotenv.write_text(f"DB_PASSWORD=fourth-password\nCANARY={CANARY}\n")
    agent.wait_until(lambda: read_file(output_dir, "db-password") == b"fourth-password", within=EDIT_DEADLINE)
    warning = agent.wait_for_log("checking api-key failed", severity="WARNING")
    assert "keeping the last known good value" in warning
    assert outputs_show(output_dir, "fourth-password", "second-key")
    assert agent.alive()
    assert agent.stop() == 0
