"""Bad configuration stops the agent before it fetches anything: exit 2, all problems listed, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import CANARY, Agents, Finished, Upstream, canary_secret

PREFIX = "secrets-agent: "


def good_secrets() -> list[dict[str, object]]:
    return [{"name": "db", "ref": Upstream.ref("db")}, canary_secret()]


def write(path: Path, document: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def problems(result: Finished) -> list[str]:
    """The problem lines on stderr (each ``secrets-agent: PATH: MESSAGE``)."""
    lines = result.stderr.splitlines()
    assert all(line.startswith(PREFIX) for line in lines), result.stderr
    return [line.removeprefix(PREFIX) for line in lines]


def assert_refused_before_fetching(result: Finished, upstream: Upstream, output_dir: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert upstream.total_calls() == 0, upstream.counters()
    assert not output_dir.exists()


def test_a_valid_configuration_runs(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """The control for the cases below: without its one mistake, each configuration works."""
    upstream.create("db", "db-value")
    config = write(tmp_path / "agent.yaml", {"output_dir": str(output_dir), "secrets": good_secrets()})

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert (output_dir / "canary").read_bytes() == CANARY.encode()


@pytest.mark.parametrize("command", ["init", "run", "dev"])
def test_every_problem_is_listed_and_nothing_is_fetched(
    command: str, agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-value")  # the valid secrets exist: only the configuration is wrong
    upstream.reset_counters()
    config = write(
        tmp_path / "agent.yaml",
        {
            "output_dir": str(output_dir),
            "notify": {"signal": "SIGFOO", "pid_file": str(tmp_path / "app.pid")},
            "secrets": [
                {"name": "escape", "ref": Upstream.ref("escape"), "file": "../../etc/cron.d/evil"},
                {"name": "absolute", "ref": Upstream.ref("absolute"), "file": "/etc/passwd"},
                {"name": "db", "ref": Upstream.ref("db")},
                {"name": "db", "ref": Upstream.ref("db-two")},
                {"name": "api-a", "ref": Upstream.ref("api-a"), "env": "API_KEY"},
                {"name": "api-b", "ref": Upstream.ref("api-b"), "env": "API_KEY"},
                {"name": "typo", "ref": "projects/agent-e2e-tests/secret/typo"},
                {"name": "hex", "ref": Upstream.ref("hex", "0x1")},
                canary_secret(),
            ],
        },
    )

    result = agents.run(command, "-c", config, "--poll-interval", "soon", "--secret", "no-equals-sign")

    assert_refused_before_fetching(result, upstream, output_dir)
    listed = problems(result)
    expected = {
        "--poll-interval: expected a duration",
        "--secret[0]: expected NAME=REF",
        "notify.signal: unknown signal 'SIGFOO'",
        "secrets[0].file: file '../../etc/cron.d/evil' must not contain '..'",
        "secrets[1].file: file '/etc/passwd' must be relative to output_dir",
        "secrets[3].name: duplicate name 'db': also used by secrets[2]",
        "secrets[5].env: duplicate env 'API_KEY': also used by secrets[4]",
        "secrets[6].ref: secret reference 'projects/agent-e2e-tests/secret/typo'",
        "secrets[7].ref: secret reference 'projects/agent-e2e-tests/secrets/hex/versions/0x1'",
    }
    for start in expected:
        assert sum(line.startswith(start) for line in listed) == 1, (start, listed)
    assert len(listed) == len(expected), listed


CASES = {
    "traversal": ({"file": "../escape"}, "secrets[0].file: file '../escape' must not contain '..'"),
    "reserved-name": ({"file": "..data/db"}, "secrets[0].file: file '..data/db': names starting with '..'"),
    "absolute": ({"file": "/etc/passwd"}, "secrets[0].file: file '/etc/passwd' must be relative"),
    "bad-reference": ({"ref": "projects/agent-e2e-tests/secrets/db/versions/"}, "secrets[0].ref: "),
    "short-ref-no-project": ({"ref": "db"}, "secrets[0].ref: "),
    "bad-mode": ({"mode": "rwx"}, "secrets[0].mode: expected an octal file mode"),
    "bad-env-name": ({"env": "1DB"}, "secrets[0].env: '1DB' is not a valid environment variable name"),
    "unknown-key": ({"required_": True}, "secrets[0].required_: unknown key (did you mean 'required'?)"),
    "duplicate-env": ({"env": "CANARY"}, "secrets[1].env: duplicate env 'CANARY' (derived from name)"),
    "duplicate-file": ({"file": "canary"}, "secrets[1].file: duplicate file 'canary' (derived from name)"),
}


@pytest.mark.parametrize(("change", "problem"), list(CASES.values()), ids=list(CASES))
def test_one_mistake_is_named_and_refused_before_any_fetch(
    change: dict[str, object],
    problem: str,
    agents: Agents,
    upstream: Upstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    secrets = good_secrets()
    secrets[0] = {**secrets[0], **change}
    config = write(tmp_path / "agent.yaml", {"output_dir": str(output_dir), "secrets": secrets})

    result = agents.run("init", "-c", config)

    assert_refused_before_fetching(result, upstream, output_dir)
    listed = problems(result)
    assert len(listed) == 1, listed
    assert listed[0].startswith(problem), listed


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--signal", "SIGNOPE", "--pid-file", "app.pid"], "--signal: unknown signal 'SIGNOPE'"),
        (
            ["--secret", "db=projects/agent-e2e-tests/secrets/db", "--secret", "db=db"],
            "--secret[1].name: duplicate",
        ),
        (["--secret", "x=projects/P/secrets/x"], "--secret[0].ref: secret reference 'projects/P/secrets/x'"),
        (["--endpoint", "localhost"], "--endpoint: expected HOST:PORT"),
    ],
    ids=["unknown-signal", "duplicate-name", "bad-project", "bad-endpoint"],
)
def test_bad_flags_are_named_like_bad_file_settings(
    flags: list[str], problem: str, agents: Agents, upstream: Upstream, output_dir: Path
) -> None:
    result = agents.run("init", "--output-dir", output_dir, *flags)

    assert_refused_before_fetching(result, upstream, output_dir)
    assert any(line.startswith(problem) for line in problems(result)), result.stderr


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"output_dir": "{out}\0x"}, "output_dir: must not contain a NUL byte"),
        ({"env_file": "app\0.env"}, "env_file: must not contain a NUL byte"),
        ({"server": {"token_file": "/run/tok\0en"}}, "server.token_file: must not contain a NUL byte"),
        ({"env_file": ".notified"}, "env_file: '.notified' (in output_dir): reserved for the record"),
    ],
    ids=["output_dir", "env_file", "token_file", "env_file-reserved"],
)
@pytest.mark.parametrize("command", ["init", "run"])
def test_nul_bytes_and_reserved_names_are_config_errors_not_tracebacks(
    command: str,
    change: dict[str, object],
    problem: str,
    agents: Agents,
    upstream: Upstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    document: dict[str, object] = {"output_dir": str(output_dir), "secrets": good_secrets()}
    for key, value in change.items():
        document[key] = value.replace("{out}", str(output_dir)) if isinstance(value, str) else value
    config = write(tmp_path / "agent.yaml", document)

    result = agents.run(command, "-c", config)

    assert_refused_before_fetching(result, upstream, output_dir)
    assert [line for line in problems(result) if line.startswith(problem)], result.stderr
