"""What ``rotate`` and ``rotation status`` print for people and for programs: pure rendering, and the
choice between the two (a terminal, ``--output``)."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta

import pytest

from agent.cli import parse
from agent.rotation import cli as rotation_cli
from agent.rotation.report import status_text
from agent.rotation.status import StatusRow
from agent.secrets.types import SecretType

NOW = datetime(2025, 1, 31, tzinfo=UTC)


def row(secret_id: str, overdue: bool = False) -> StatusRow:
    return StatusRow(secret_id, SecretType.API_KEY, "3", timedelta(days=40), NOW, overdue)


def test_the_status_text_is_an_aligned_table_and_a_summary() -> None:
    text = status_text([row("api", overdue=True), row("a-much-longer-name")])
    lines = text.splitlines()
    assert lines[0].split() == ["SECRET", "TYPE", "VERSION", "AGE", "NEXT", "DUE", "OVERDUE", "NOTE"]
    assert lines[1].index("api-key") == lines[2].index("api-key") == lines[0].index("TYPE")
    assert lines[-1] == "2 secrets under rotation, 1 overdue"


@pytest.mark.parametrize(
    ("rows", "summary"),
    [
        ([row("api")], "1 secret under rotation, none overdue"),
        ([row("a", True), row("b", True), row("c")], "3 secrets under rotation, 2 overdue"),
    ],
)
def test_the_summary_counts_in_good_english(rows: list[StatusRow], summary: str) -> None:
    assert status_text(rows).splitlines()[-1] == summary


def test_an_empty_status_says_what_it_means() -> None:
    assert status_text([]) == (
        "no secrets under rotation: none has a secret-type label, and -c FILE names none "
        "(see secrets-agent rotate --help)\n"
    )


class FakeTerminal(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize(
    ("argv", "terminal", "expected"),
    [
        (["rotation", "status"], True, "text"),
        (["rotation", "status"], False, "json"),
        (["rotation", "status", "--output", "text"], False, "text"),
        (["rotation", "status", "--output", "table"], False, "text"),  # the former name
        (["rotation", "status", "--output", "json"], True, "json"),
        (["rotate", "all"], False, "text"),  # rotate's table stays the default everywhere
        (["rotate", "all", "--output", "json"], True, "json"),
    ],
)
def test_the_output_is_text_on_a_terminal_for_status(
    argv: list[str], terminal: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = parse(argv, {}).args
    monkeypatch.setattr("sys.stdout", FakeTerminal(terminal))
    assert rotation_cli._output(args, "auto" if argv[0] == "rotation" else "text") == expected


@pytest.mark.parametrize(
    ("quiet", "terminal", "flag", "level"),
    [
        (True, True, None, "warning"),  # status on a terminal: the audit events are hidden
        (True, False, None, "info"),  # status in a pipe: kept, as JSON lines for a collector
        (True, True, "info", "info"),
        (False, True, None, "info"),  # rotate: its audit trail of changes always shows
    ],
)
def test_the_default_log_level_hides_audit_events_on_a_terminal(
    quiet: bool, terminal: bool, flag: str | None, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured: list[tuple[str, str]] = []
    monkeypatch.setattr("sys.stderr", FakeTerminal(terminal))
    monkeypatch.setattr(rotation_cli, "configure_logging", lambda lv, fmt: configured.append((lv, fmt)))
    rotation_cli._configure_logging(argparse.Namespace(log_level=flag, log_format="auto"), quiet)
    assert configured == [(level, "auto")]
