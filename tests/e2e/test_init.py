"""``secrets-agent init`` end to end: the real program, the emulator seeded through the official client."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from pathlib import Path

from dotenv import dotenv_values

from agent.sources.errors import STATUS_RULES
from tests.e2e.conftest import CANARY, Agents, Finished, Upstream, data_target, write_config

SHAPES = (
    "plain-{i}",
    "line one {i}\nline two\n",
    "quotes ' and \" {i}",
    "dollar $HOME $1 {i}",
    "hash # not a comment {i}",
    "back\\slash \\n {i}",
    "unicodé ✓ {i}",
    "  spaced {i}  ",
    "=equals=={i}",
    "tab\there {i}",
)


def fifty_secrets() -> list[dict[str, object]]:
    """50 secrets with values that are hard for an env file; some custom modes and a nested file."""
    secrets: list[dict[str, object]] = []
    for i in range(50):
        entry: dict[str, object] = {"name": f"app-secret-{i:02d}", "ref": Upstream.ref(f"app-secret-{i:02d}")}
        if i % 10 == 3:
            entry["mode"] = "0400"
        if i % 10 == 7:
            entry["mode"] = "0640"
        if i == 12:
            entry["file"] = "tls/key.pem"
        secrets.append(entry)
    return secrets


TEMPLATED = 49
"""python-dotenv would expand ``${...}`` whatever the quoting: the env file leaves this one out (warned)."""


def value_of(i: int) -> str:
    if i == TEMPLATED:
        return "uses ${HOME} literally"
    return SHAPES[i % len(SHAPES)].format(i=i)


def stderr_is_clean(result: Finished) -> None:
    """Every line on stderr is a JSON log record without a stack trace: no traceback anywhere."""
    assert "Traceback" not in result.stderr
    for line in result.stderr.splitlines():
        record = json.loads(line)  # fails on any line that is not a log record
        assert "stack_trace" not in record, record


def test_init_writes_fifty_secrets_with_their_modes_and_an_env_file(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    secrets = fifty_secrets()
    for i in range(50):
        upstream.create(f"app-secret-{i:02d}", "an older value", value_of(i))
    config = write_config(tmp_path / "agent.yaml", secrets, output_dir=str(output_dir), env_file="app.env")

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    stderr_is_clean(result)
    for i, entry in enumerate(secrets):
        path = output_dir / str(entry.get("file", entry["name"]))
        assert path.read_bytes() == value_of(i).encode(), path
        expected_mode = int(str(entry.get("mode", "0440")), 8)
        assert stat.S_IMODE(path.stat().st_mode) == expected_mode, f"{path}: {oct(path.stat().st_mode)}"
    assert (output_dir / "canary").read_bytes() == CANARY.encode()
    expected_env = {f"APP_SECRET_{i:02d}": value_of(i) for i in range(50) if i != TEMPLATED}
    assert dotenv_values(output_dir / "app.env") == expected_env | {"CANARY": CANARY}
    [left_out] = [m for m in result.messages("WARNING") if "left out of the env file" in m]
    assert f"app-secret-{TEMPLATED}" in left_out
    assert "${...}" in left_out
    # Each secret was fetched exactly once: concurrency, not repetition.
    assert upstream.counters()["AccessSecretVersion"] == {"OK": 51}
    print(f"init of 51 secrets: {result.seconds:.2f}s (process start-up included)")

    served = data_target(output_dir)
    served_inode = (output_dir / served).stat().st_ino
    again = agents.run("init", "-c", config)

    assert again.returncode == 0, again.stderr
    # Unchanged secrets are not rewritten: the same snapshot directory is still the one served.
    assert data_target(output_dir) == served
    assert (output_dir / served).stat().st_ino == served_inode


def failure_lines(result: Finished, severity: str, name: str) -> list[str]:
    return [m for m in result.messages(severity) if f" {name} <- " in m]


def test_init_reports_each_failed_secret_in_one_line_and_exits_non_zero(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """What ``init`` does when some secrets fail: it exits 1 and logs one line per failure (secret,
    reference, status, hint); an optional secret only warns.

    It still writes the secrets it could fetch (the same bootstrap as ``run``): harmless, because the app
    does not start after a failed init container, and a retried init fetches everything again anyway.
    The failed ones have no file at all: nothing half-written, nothing invented.
    """
    upstream.create("db", "db-value")
    upstream.create("retired", "old-value")
    upstream.disable("retired", "1")  # its latest version is disabled: FAILED_PRECONDITION
    config = write_config(
        tmp_path / "agent.yaml",
        [
            {"name": "db", "ref": Upstream.ref("db")},
            {"name": "ghost", "ref": Upstream.ref("ghost")},  # never created: NOT_FOUND
            {"name": "retired", "ref": Upstream.ref("retired")},
            {"name": "feature-flag", "ref": Upstream.ref("feature-flag"), "required": False},
        ],
        output_dir=str(output_dir),
    )

    result = agents.run("init", "-c", config)

    assert result.returncode == 1
    stderr_is_clean(result)
    expectations = {
        "ghost": ("NOT_FOUND", "does the secret/version exist?"),
        "retired": ("FAILED_PRECONDITION", "disabled or destroyed"),
    }
    for name, (status, hint) in expectations.items():
        lines = failure_lines(result, "ERROR", name)
        assert len(lines) == 1, (name, result.messages())
        line = lines[0]
        # Named once each: the reference, the status (Secret Manager's own message repeats neither).
        assert line.count(Upstream.ref(name, "latest")) == 1, line
        assert line.count(status) == 1, line
        assert f": {status}: " in line, line
        assert f"(hint: {STATUS_RULES[status].hint})" in line, line
        assert hint in line, line
    optional = failure_lines(result, "WARNING", "feature-flag")
    assert len(optional) == 1, optional
    assert "optional secret skipped" in optional[0]
    assert ": NOT_FOUND: " in optional[0]
    assert not failure_lines(result, "ERROR", "feature-flag")
    assert any("2 of 4 required secret(s)" in m for m in result.messages("ERROR")), result.messages("ERROR")
    # Permanent errors are not retried: one call each.
    assert upstream.counters()["AccessSecretVersion"] == {"FAILED_PRECONDITION": 1, "NOT_FOUND": 2, "OK": 2}
    assert (output_dir / "db").read_bytes() == b"db-value"
    assert (output_dir / "canary").read_bytes() == CANARY.encode()
    for name in ("ghost", "retired", "feature-flag"):
        assert not os.path.lexists(output_dir / name), name


def test_init_names_a_forbidden_secret_with_a_permission_hint(
    agents: Agents, upstream: Upstream, output_dir: Path
) -> None:
    """PERMISSION_DENIED comes from the emulator's fault (it has no IAM). The fault fails the next call,
    whichever secret it is for, so this run asks for that one secret only: the result is deterministic."""
    upstream.create("payroll", "payroll-value")
    upstream.set_faults({"AccessSecretVersion": {"fail_next": 1, "fail_code": "PERMISSION_DENIED"}})

    result = agents.run("init", "--secret", f"payroll={Upstream.ref('payroll')}", "--output-dir", output_dir)

    assert result.returncode == 1
    stderr_is_clean(result)
    [line] = failure_lines(result, "ERROR", "payroll")
    assert Upstream.ref("payroll", "latest") in line
    assert ": PERMISSION_DENIED: " in line
    assert "roles/secretmanager.secretAccessor" in line
    assert upstream.counters()["AccessSecretVersion"] == {"PERMISSION_DENIED": 1}  # not retried
    assert not os.path.lexists(output_dir / "payroll")


def bootstrap_seconds(result: Finished) -> float:
    """Seconds between the agent's first and last log line (its own clock, start-up excluded)."""
    times = [datetime.fromisoformat(str(r["time"]).replace("Z", "+00:00")) for r in result.records]
    return (times[-1] - times[0]).total_seconds()


def test_init_timeout_bounds_a_backend_that_is_down(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    upstream.create("db", "db-value")
    upstream.set_faults({"AccessSecretVersion": {"unavailable": 1.0}})
    config = write_config(tmp_path / "agent.yaml", [{"name": "db", "ref": Upstream.ref("db")}])

    result = agents.run("init", "-c", config, "--output-dir", output_dir, "--timeout", "2s")

    assert result.returncode == 1
    stderr_is_clean(result)
    assert bootstrap_seconds(result) < 2.0 + 0.5, result.stderr
    assert result.seconds < 2.0 + 5.0
    [line] = failure_lines(result, "ERROR", "db")
    assert ": UNAVAILABLE: " in line, line
    assert "hint: Secret Manager is unreachable" in line, line
    assert any("retry" in m for m in result.messages("WARNING"))
    assert upstream.calls("AccessSecretVersion", "UNAVAILABLE") >= 4  # both secrets, each retried
    assert not os.path.lexists(output_dir / "db")


def test_init_timeout_bounds_a_backend_that_hangs(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """A backend that accepts the call and never answers: the overall --timeout still wins over the
    per-call timeout (set longer here), so an init container never outlives its deadline."""
    upstream.create("db", "db-value")
    upstream.set_faults({"AccessSecretVersion": {"latency_ms": 8000}})
    config = write_config(tmp_path / "agent.yaml", [{"name": "db", "ref": Upstream.ref("db")}])

    result = agents.run(
        "init",
        "-c",
        config,
        "--output-dir",
        output_dir,
        "--timeout",
        "1s",
        env={"SECRETS_AGENT_GCP_CALL_TIMEOUT": "6s"},
    )

    assert result.returncode == 1
    stderr_is_clean(result)
    assert bootstrap_seconds(result) < 1.0 + 0.5, result.stderr
    [line] = failure_lines(result, "ERROR", "db")
    assert ": DEADLINE_EXCEEDED: " in line, line
