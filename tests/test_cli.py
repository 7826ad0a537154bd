"""The real command line: `check-config` exit codes and output, `--help`, and no traceback ever."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.cli import main
from agent.config import load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent.yaml"

BAD_CONFIG = """\
project: my-proj
log_level: loud
secrets:
  - name: db
    ref: db
  - name: api
    ref: api@0
  - name: cache
    ref: projects/p/secrets/bad!
    mode: rw
  - name: db
    ref: other
"""

BAD_LINES = [
    "secrets-agent: log_level: expected one of debug, info, warning, error, got 'loud'",
    "secrets-agent: secrets[1].ref: secret reference 'api@0': version 0 does not exist: "
    "versions are numbered from 1",
    "secrets-agent: secrets[2].mode: expected an octal file mode such as '0440', got 'rw'",
    "secrets-agent: secrets[3].name: duplicate name 'db': also used by secrets[0]",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SECRETS_AGENT_* or GOOGLE_CLOUD_PROJECT must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("SECRETS_AGENT_") or name == "GOOGLE_CLOUD_PROJECT":
            monkeypatch.delenv(name)


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    return path


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SECRETS_AGENT_") and k != "GOOGLE_CLOUD_PROJECT"
    }


def test_check_config_prints_the_normalised_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    printed = yaml.safe_load(out)
    assert printed == load_config(EXAMPLE, {}, {}).to_dict()
    assert printed["secrets"][0]["ref"] == "projects/acme-payments-prod/secrets/db-password/versions/latest"
    assert printed["poll_interval"] == 300


def test_the_printed_configuration_is_itself_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    normalised = tmp_path / "normalised.yaml"
    normalised.write_text(capsys.readouterr().out)
    assert load_config(normalised, {}, {}) == load_config(EXAMPLE, {}, {})


def test_check_config_reports_every_problem_with_its_path_and_exits_2(
    bad_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(bad_file)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    for expected in BAD_LINES:
        assert expected in lines
    cache_line = next(line for line in lines if line.startswith("secrets-agent: secrets[2].ref: "))
    assert "secret reference 'projects/p/secrets/bad!'" in cache_line
    assert "secret id may only contain letters, digits, '-' and '_'" in cache_line
    assert len(lines) == len(BAD_LINES) + 1
    assert "Traceback" not in err


def test_flags_override_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("project: file-proj\npoll_interval: 1m\nsecrets: [{name: db, ref: db}]\n")
    monkeypatch.setenv("SECRETS_AGENT_PROJECT", "env-proj")
    monkeypatch.setenv("SECRETS_AGENT_POLL_INTERVAL", "2m")
    assert main(["check-config", str(config), "--project", "flag-proj"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["project"] == "flag-proj"
    assert printed["poll_interval"] == 120
    assert printed["secrets"][0]["ref"] == "projects/flag-proj/secrets/db/versions/latest"


def test_bad_flags_and_variables_are_reported_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRETS_AGENT_MAX_STALENESS", "forever")
    assert main(["check-config", str(EXAMPLE), "--poll-interval", "soon"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "secrets-agent: --poll-interval: expected a duration such as 30s, 5m, 1h or 1500ms, got 'soon'",
        "secrets-agent: env SECRETS_AGENT_MAX_STALENESS: expected a duration such as 30s, 5m, 1h or 1500ms, "
        "got 'forever'",
    ]


def test_the_file_can_be_named_by_secrets_agent_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRETS_AGENT_CONFIG", str(EXAMPLE))
    assert main(["check-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["project"] == "acme-payments-prod"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("project: [unclosed\n", "bad.yaml:2: invalid YAML: "),
        ("a: 1\na: 2\n", "bad.yaml:2: invalid YAML: found duplicate key 'a'"),
        ("just text\n", "bad.yaml:1: expected a mapping of settings at the top level, got 'just text'"),
    ],
)
def test_unreadable_yaml_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["check-config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"secrets-agent: {tmp_path}/")
    assert expected in line


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"secrets-agent: {tmp_path / 'nope.yaml'}: no such file\n"


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "emulator" in out
    assert "check-config" in out


def test_check_config_help_lists_the_config_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check-config", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--project",
        "--log-level",
        "--output-dir",
        "--env-file",
        "--poll-interval",
        "--max-staleness",
    ):
        assert flag in out


def test_python_dash_m_agent_check_config_as_a_real_process(bad_file: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["project"] == "acme-payments-prod"

    bad = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(bad_file)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    for expected in BAD_LINES:
        assert expected in bad.stderr.splitlines()
    assert "Traceback" not in bad.stderr


def test_the_installed_secrets_agent_command_has_help() -> None:
    command = Path(sys.executable).parent / "secrets-agent"
    done = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "emulator" in done.stdout
    assert "check-config" in done.stdout
