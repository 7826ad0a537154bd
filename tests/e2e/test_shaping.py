"""Shaped outputs end to end: keys of JSON secrets and templates, through the real program and emulator.

What a user sees is checked: the files (and that they change in one ``..data`` swap), what the app reads
and how often it is told, the log (naming the failing template and key, never a value), the exit status of
``init`` and ``check-config``, the environment ``exec`` hands over, and what ``dev`` renders from a ``.env``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from testing.apps import app_argv, find_records, wait_for_records_sync
from tests.e2e.conftest import CANARY, Agents, Apps, Upstream, data_target, read_file, write_config
from tests.e2e.test_endpoint_e2e import ready, start

DB_V1 = {"username": "app", "password": "p@ss/word:1", "host": "db.internal"}
DB_V2 = {"username": "app", "password": "second #pass", "host": "db.internal"}
URL = "postgresql://{{ secrets.db.data.username | urlquote }}:{{ secrets.db.data.password | urlquote }}@{{ secrets.db.data.host }}/app"  # noqa: E501


def db_secret() -> dict[str, Any]:
    return {
        "name": "db",
        "ref": Upstream.ref("db"),
        "format": "json",
        "deliver": False,
        "keys": [{"key": "password", "file": "db/password", "env": "DB_PASSWORD"}],
    }


def url_template() -> dict[str, Any]:
    return {"name": "database-url", "file": "db/url", "env": "DATABASE_URL", "text": URL, "secrets": ["db"]}


def dsn(values: dict[str, str]) -> str:
    from urllib.parse import quote

    user, password = quote(values["username"], safe=""), quote(values["password"], safe="")
    return f"postgresql://{user}:{password}@{values['host']}/app"


def shaped_config(path: Path, output_dir: Path, **settings: object) -> Path:
    return write_config(
        path,
        [db_secret()],
        templates=[url_template()],
        output_dir=str(output_dir),
        env_file="app.env",
        **settings,
    )


def test_a_rotated_json_secret_changes_its_key_and_the_composed_url_in_one_swap_and_one_signal(
    agents: Agents, apps: Apps, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", json.dumps(DB_V1))
    config = shaped_config(tmp_path / "agent.yaml", output_dir, poll_interval="0.3s")
    app_log = tmp_path / "app.log"
    agent = agents.start(
        "run", "-c", config, "--process", re.escape(str(app_log)), env={"SECRETS_AGENT_NOTIFY_DEBOUNCE": "0"}
    )
    agent.wait_for_log("run: serving", within=15)
    assert read_file(output_dir, "db/password") == DB_V1["password"].encode()
    assert read_file(output_dir, "db/url") == dsn(DB_V1).encode()
    assert (output_dir / "db").is_dir()  # deliver: false: no file for the whole payload, only its keys
    assert "\nDB=" not in (output_dir / "app.env").read_text()
    apps.start(app_argv(app_log, directory=output_dir, files=["db/password", "db/url"], snapshot=True))
    [first] = wait_for_records_sync(app_log, event="read")
    assert first["values"] == {"db/password": DB_V1["password"], "db/url": dsn(DB_V1)}
    before = data_target(output_dir)

    upstream.add("db", json.dumps(DB_V2))
    [reload] = wait_for_records_sync(app_log, event="read", signal="SIGHUP", within=10)
    assert reload["values"] == {"db/password": DB_V2["password"], "db/url": dsn(DB_V2)}
    assert data_target(output_dir) != before
    env_file = (output_dir / "app.env").read_text()
    assert "DATABASE_URL=" in env_file
    assert "DB_PASSWORD=" in env_file
    # Absence needs a window: three more poll intervals in which nothing else may reach the app.
    time.sleep(1.0)
    assert len(find_records(app_log, event="read", signal="SIGHUP")) == 1


def test_a_missing_key_at_rotation_keeps_the_old_snapshot_and_names_the_key_never_the_value(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", json.dumps(DB_V1))
    config = shaped_config(
        tmp_path / "agent.yaml",
        output_dir,
        poll_interval="0.3s",
        max_staleness="2s",
        server={"listen": "127.0.0.1:0"},
        probes={"listen": "127.0.0.1:0"},
    )
    agent, _, probes = start(agents, "run", "-c", config)
    agent.wait_until(lambda: ready(probes), within=15, what="/readyz to answer 200")
    before = data_target(output_dir)

    # A new version without "password", whose other field is the canary (no output may ever show it).
    upstream.add("db", json.dumps({"username": CANARY, "host": CANARY}))
    error = agent.wait_for_log("cannot render", within=10, severity="ERROR")
    assert "'password'" in error
    assert "template 'database-url'" in error
    assert CANARY not in error
    assert data_target(output_dir) == before
    assert read_file(output_dir, "db/password") == DB_V1["password"].encode()
    assert read_file(output_dir, "db/url") == dsn(DB_V1).encode()
    # Reported once, not on every poll; and /readyz turns once the last good value is older than allowed.
    agent.wait_until(lambda: not ready(probes), within=10, what="/readyz to fail after max_staleness")
    assert len([m for m in agent.messages("ERROR") if "cannot render" in m]) == 1
    metrics = requests.get(f"{probes}/metrics", timeout=5).text
    assert 'secrets_agent_template_ok{template="database-url"} 0.0' in metrics
    assert CANARY not in agent.stderr()

    upstream.add("db", json.dumps(DB_V2))  # fixed: the next version renders and is swapped in
    agent.wait_until(lambda: read_file(output_dir, "db/url") == dsn(DB_V2).encode(), within=10, what="fix")
    agent.wait_for_log("every output renders again", within=5)


def test_init_exits_1_naming_the_template_and_writes_nothing(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", json.dumps({"username": CANARY}))
    config = shaped_config(tmp_path / "agent.yaml", output_dir)
    init = agents.run("init", "-c", config)
    assert init.returncode == 1, init.stderr
    assert "template 'database-url'" in init.stderr
    assert "'password'" in init.stderr
    assert CANARY not in init.stderr
    assert read_file(output_dir, "db/url") is None


def test_check_config_reports_template_problems_with_their_paths(agents: Agents, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "agent.yaml",
        [db_secret()],
        templates=[
            {"name": "broken", "file": "broken", "text": "line one\n{% if %}"},
            {"name": "typo", "env": "TYPO", "text": "{{ secrets.dbb.value }}"},
        ],
        output_dir=str(tmp_path / "out"),
    )
    checked = agents.run("check-config", config)
    assert checked.returncode == 2, checked.stderr
    assert "templates[0].text" in checked.stderr
    assert "line 2" in checked.stderr
    assert "templates[1].text" in checked.stderr
    assert "'dbb'" in checked.stderr


def test_dev_renders_the_same_templates_from_a_dotenv_file(
    agents: Agents, output_dir: Path, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DB='{json.dumps(DB_V1)}'\nCANARY={CANARY}\n")
    config = shaped_config(tmp_path / "agent.yaml", output_dir)
    agent = agents.start("dev", "-c", config, "--dotenv", dotenv)
    agent.wait_for_log("dev: serving", within=15)
    assert read_file(output_dir, "db/url") == dsn(DB_V1).encode()
    dotenv.write_text(f"DB='{json.dumps(DB_V2)}'\nCANARY={CANARY}\n")
    agent.wait_until(lambda: read_file(output_dir, "db/url") == dsn(DB_V2).encode(), within=5, what="edit")
    assert read_file(output_dir, "db/password") == DB_V2["password"].encode()


DUMP_ENV = (
    "import json, os, sys; json.dump({k: os.environ.get(k) for k in sys.argv[2:]}, open(sys.argv[1], 'w'))"
)


def test_exec_hands_the_app_keys_and_templates_as_environment_variables(
    agents: Agents, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.create("db", json.dumps(DB_V1))
    config = shaped_config(tmp_path / "agent.yaml", tmp_path / "unused")
    seen = tmp_path / "env.json"
    done = agents.run(
        "exec", "-c", config, "--", sys.executable, "-c", DUMP_ENV, seen, "DATABASE_URL", "DB_PASSWORD", "DB"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(seen.read_text()) == {
        "DATABASE_URL": dsn(DB_V1),
        "DB_PASSWORD": DB_V1["password"],
        "DB": None,  # deliver: false
    }


def test_the_example_configuration_checks(agents: Agents) -> None:
    example = Path(__file__).parents[2] / "examples" / "agent.yaml"
    checked = agents.run("check-config", example)
    assert checked.returncode == 0, checked.stderr
    assert yaml.safe_load(checked.stdout)["templates"][0]["name"] == "database-url"
