"""The Makefile's set-up: ``make run`` installs only what running needs, ``make test`` the rest, and neither
reinstalls when no dependency list changed.

Each test copies the Makefile into an empty directory and asks ``make -n`` (print, run nothing) what it would
do, with the stamps' and the dependency lists' times set explicitly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPENDENCY_LISTS = ("pyproject.toml", "emulator/pyproject.toml", "constraints.txt")
RUN_STAMP = ".venv/.installed-run"
TEST_STAMP = ".venv/.installed-test"
OLD, NEW = 1_000_000_000, 1_000_000_100  # seconds since the epoch: the stamps' and the lists' times


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory holding the Makefile and the dependency lists, and no virtualenv yet."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for name in DEPENDENCY_LISTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (OLD, OLD))
    return tmp_path


def make(checkout: Path, *args: str) -> str:
    """What ``make -n ARGS`` would run, continuation lines joined."""
    # Not the MAKEFLAGS of a `make pytest` around us: its variables would reach this make too.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(checkout), *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stdout.replace("\\\n", " ")


def pip_installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line and "--upgrade pip" not in line]


def installed(checkout: Path, *stamps: str, at: int = NEW) -> None:
    """A virtualenv with these stamps, newer than the dependency lists."""
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text("")
    for stamp in stamps:
        (checkout / stamp).write_text("")
        os.utime(checkout / stamp, (at, at))


def test_a_fresh_make_run_creates_the_venv_and_installs_the_runtime_only(checkout: Path) -> None:
    commands = make(checkout, "run")
    assert "-m venv .venv" in commands
    [install] = pip_installs(commands)
    assert "--constraint constraints.txt" in install
    assert "-e . -e ./emulator" in install
    assert "[" not in install, install  # no extra: no test, docs or dev tools
    assert "bash examples/demo.sh" in commands


def test_the_demo_needs_no_extra() -> None:
    # The run stamp installs the agent without extras: the demo must not turn on events (the pubsub extra).
    config = yaml.safe_load((REPO / "examples" / "demo-agent.yaml").read_text())
    assert "events" not in config


def test_a_second_make_run_installs_nothing(checkout: Path) -> None:
    installed(checkout, RUN_STAMP)
    commands = make(checkout, "run")
    assert pip_installs(commands) == []
    assert "-m venv" not in commands
    assert "bash examples/demo.sh" in commands


def test_make_test_after_make_run_installs_the_tools_into_the_same_venv(checkout: Path) -> None:
    installed(checkout, RUN_STAMP)
    commands = make(checkout, "test")
    assert "-m venv" not in commands
    [install] = pip_installs(commands)
    assert "-e '.[pubsub,postgres,test,docs,dev]' -e ./emulator" in install
    assert "mkdocs build --strict --site-dir site" in commands


def test_after_make_test_neither_target_installs_again(checkout: Path) -> None:
    installed(checkout, RUN_STAMP, TEST_STAMP)
    assert pip_installs(make(checkout, "run")) == []
    assert pip_installs(make(checkout, "test")) == []


@pytest.mark.parametrize("changed", DEPENDENCY_LISTS)
def test_a_changed_dependency_list_reinstalls(checkout: Path, changed: str) -> None:
    installed(checkout, RUN_STAMP, TEST_STAMP)
    os.utime(checkout / changed, (NEW + 10, NEW + 10))
    assert len(pip_installs(make(checkout, "run"))) == 1
    assert len(pip_installs(make(checkout, "lint"))) == 1


def test_test_quick_is_make_test_without_the_java_and_postgresql_tests(checkout: Path) -> None:
    installed(checkout, RUN_STAMP, TEST_STAMP)
    full, quick = make(checkout, "test"), make(checkout, "test-quick")
    assert "-m 'not pubsub and not postgres'" in quick
    assert "not pubsub" not in full
    for step in (
        "ruff check",
        "ruff format --check",
        "hadolint Dockerfile",
        "lint-imports",
        "mypy",
        "mkdocs build",
    ):
        assert step in full
        assert step in quick


def test_clean_removes_the_built_manual(checkout: Path) -> None:
    assert " site" in make(checkout, "clean")


def test_help_lists_the_targets(checkout: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    listed = subprocess.run(
        ["make", "--no-print-directory", "-C", str(checkout)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    names = {line.split()[0] for line in listed.splitlines()[1:]}
    assert {
        "run",
        "test",
        "test-quick",
        "format",
        "lint",
        "docs",
        "docs-build",
        "bench",
        "soak",
        "clean",
    } <= names
    assert not (checkout / ".venv").exists()  # plain `make` is the help: it installs nothing
