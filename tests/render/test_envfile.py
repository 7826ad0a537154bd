"""The env file reads back exactly through python-dotenv (interpolate on and off), dash and bash."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.errors import SinkError
from agent.render.envfile import EnvValueError, quoting_for, render_env_file, render_value, value_problem

SHELLS = {shell: path for shell in ("sh", "bash") if (path := shutil.which(shell))}


@dataclass(frozen=True)
class ShellRun:
    """One way a shell reads the file: which shell, in which locale."""

    shell: str
    env: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.shell} (LC_ALL={self.env['LC_ALL']})"


@pytest.fixture(scope="session")
def shells(tmp_path_factory: pytest.TempPathFactory) -> list[ShellRun]:
    """dash (byte-oriented), and bash in every locale that changes what it takes for a letter: C.UTF-8, C
    and, when localedef can build it, ISO-8859-1, where bytes of UTF-8 text look like letters."""
    quiet = {"PATH": "/nonexistent"}  # a deliberately broken candidate must not be able to run anything
    runs = [ShellRun("sh", {**quiet, "LC_ALL": "C"})] if "sh" in SHELLS else []
    if "bash" in SHELLS:
        runs += [ShellRun("bash", {**quiet, "LC_ALL": locale}) for locale in ("C.UTF-8", "C")]
        locales = tmp_path_factory.mktemp("locales")
        localedef = shutil.which("localedef")
        built = localedef is not None and (
            subprocess.run(
                [localedef, "-i", "de_DE", "-f", "ISO-8859-1", str(locales / "de_DE.ISO-8859-1")],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
        if built:
            runs.append(ShellRun("bash", {**quiet, "LC_ALL": "de_DE.ISO-8859-1", "LOCPATH": str(locales)}))
    return runs


# The characters that make quoting hard, plus harmless ones so that they land in every position. No `;`,
# `|`, `&`, `<` or `>`: deliberately broken candidates below are run by a real shell.
HARD = [*"'\"$\\`#{}()\n\r \t=!*@?-_:%~[]aZ9", "é", "中", "😀", "\u00a0"]
hard_text = st.text(alphabet=st.sampled_from(HARD), max_size=12)
any_text = st.text(max_size=40)  # any Unicode scalar value (hypothesis leaves out lone surrogates)
values = st.one_of(hard_text, any_text, st.sampled_from(["", "$", "\\", "'", "${X}", "it's $HOME"]))
# Mostly values that fall between the two quotings, to exercise the refusals.
refusal_prone = st.text(alphabet=st.sampled_from(list("'$\\`{}\r aZ9-:")), min_size=2, max_size=8)


# -- the readers ------------------------------------------------------------------------------------


def run_shell(run: ShellRun, env_file: Path, names: list[str]) -> list[str]:
    """Source ``env_file`` the way users do (``set -a; . FILE``) and print each variable exactly."""
    script = 'set -a; . "$1"; shift; for n in "$@"; do eval "printf \'%s\\0\' \\"\\$$n\\""; done'
    result = subprocess.run(
        [SHELLS[run.shell], "-c", script, run.shell, str(env_file), *names],
        capture_output=True,
        env=run.env,
        cwd=env_file.parent,
        stdin=subprocess.DEVNULL,
        timeout=10,
        check=False,
    )
    if result.returncode != 0:
        raise ShellFailed(result.stderr.decode(errors="replace"))
    out = result.stdout.decode("utf-8")
    assert out.endswith("\0") or not names
    return out.split("\0")[:-1]


class ShellFailed(Exception):
    pass


def read_all_ways(text: bytes, names: list[str], shells: list[ShellRun]) -> dict[str, list[str]]:
    """What every reader makes of the file ``text``: reader name -> the values of ``names`` in order."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        path = Path(directory) / "secrets.env"
        path.write_bytes(text)
        results: dict[str, list[str]] = {}
        for interpolate in (True, False):
            parsed = dotenv_values(path, interpolate=interpolate)
            results[f"dotenv(interpolate={interpolate})"] = [parsed.get(n) or "" for n in names]
            if set(parsed) != set(names):
                results[f"dotenv(interpolate={interpolate})"] = ["<different keys>"]
        for run in shells:
            try:
                results[run.label] = run_shell(run, path, names)
            except (ShellFailed, UnicodeDecodeError, subprocess.TimeoutExpired):
                results[run.label] = ["<failed>"]
        return results


def parses_cleanly(text: bytes) -> bool:
    """python-dotenv found no line it could not parse (it would log a warning for each)."""
    return not any(binding.error for binding in parse_stream(io.StringIO(text.decode("utf-8"))))


# -- properties --------------------------------------------------------------------------------------


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(values, min_size=1, max_size=25))
def test_every_value_it_accepts_reads_back_exactly_everywhere(
    texts: list[str], shells: list[ShellRun]
) -> None:
    accepted = [t for t in texts if value_problem(t.encode()) is None]
    names = [f"V{i}" for i in range(len(accepted))]
    rendered = render_env_file(
        [(f"secret-{i}", n, t.encode()) for i, (n, t) in enumerate(zip(names, accepted, strict=True))]
    )
    assert parses_cleanly(rendered)
    for reader, got in read_all_ways(rendered, names, shells).items():
        assert got == accepted, reader


def candidate_encodings(text: str) -> dict[str, str]:
    """The only quoted forms python-dotenv takes as one token (written independently of the renderer)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return {"single": f"'{text}'", "double": f'"{escaped}"'}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(refusal_prone, hard_text))
def test_a_value_is_refused_only_when_no_quoting_serves_every_reader(
    text: str, shells: list[ShellRun]
) -> None:
    problem = value_problem(text.encode())
    event("refused" if problem else "accepted")
    if problem is None or "\0" in text:
        return  # accepted values are covered above; NUL can be in no environment variable at all
    if not any("ISO-8859-1" in run.label for run in shells) and re.search(r"\$[^\x00-\x7f]", text):
        return  # '$' + non-ASCII fails only in bash with a single-byte locale, which cannot be built here
    for style, word in candidate_encodings(text).items():
        results = read_all_ways(f"V={word}\n".encode(), ["V"], shells)
        assert any(got != [text] for got in results.values()), (style, problem, results)


# -- golden cases ---------------------------------------------------------------------------------------

GOLDEN = [
    ("", "''"),
    ("plain", "'plain'"),
    ("with space # and hash", "'with space # and hash'"),
    ("a$b `cmd` $(x) ${a:b}", "'a$b `cmd` $(x) ${a:b}'"),
    ('say "hi"', "'say \"hi\"'"),
    ("one\\backslash", "'one\\backslash'"),
    ("line1\nline2\n", "'line1\nline2\n'"),
    ("é中😀", "'é中😀'"),
    ("it's", '"it\'s"'),
    ("it's 5$", '"it\'s 5$"'),
    ("it's $ 5 $% $/", '"it\'s $ 5 $% $/"'),
    ("two\\\\", '"two\\\\\\\\"'),
    ("trailing\\", '"trailing\\\\"'),
    ("'\"\\", '"\'\\"\\\\"'),
]


@pytest.mark.parametrize(("text", "word"), GOLDEN)
def test_golden_values(text: str, word: str, shells: list[ShellRun]) -> None:
    assert render_value("s", text.encode()) == word
    names = ["V"]
    for reader, got in read_all_ways(f"V={word}\n".encode(), names, shells).items():
        assert got == [text], reader


REFUSED = [
    ("it's $HOME", "mixes a single quote"),
    ("it's `date`", "mixes a single quote"),
    ("a\\\\b$1", "mixes a single quote"),
    ("it's $é", "mixes a single quote"),  # bash in ISO-8859-1 takes the first byte of é for a letter
    ("${HOME}", "python-dotenv expands"),
    ("x${A:-b}y", "python-dotenv expands"),
    ("win\r\n", "carriage return"),
    ("a\0b", "NUL"),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refused_values_name_the_secret_and_the_reason(text: str, reason: str) -> None:
    with pytest.raises(EnvValueError) as caught:
        render_env_file([("db-password", "DB_PASSWORD", text.encode())])
    message = str(caught.value)
    assert "'db-password'" in message
    assert reason in message
    assert caught.value.secret == "db-password"


def test_non_utf8_is_refused_without_showing_the_value() -> None:
    canary = b"CANARY-\xff\xfe-7f3a"
    with pytest.raises(EnvValueError) as caught:
        render_env_file([("api-key", "API_KEY", canary)])
    message = str(caught.value)
    assert "'api-key'" in message
    assert "not UTF-8" in message
    assert "CANARY" not in message
    assert "7f3a" not in message


def test_file_is_sorted_by_variable_and_stable() -> None:
    entries = [("b", "ZED", b"1"), ("a", "ALPHA", b"2"), ("c", "MID", b"3")]
    rendered = render_env_file(entries)
    lines = rendered.decode().splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["ALPHA='2'", "MID='3'", "ZED='1'"]
    assert render_env_file(list(reversed(entries))) == rendered


def test_empty_file_is_just_the_header_and_reads_as_nothing() -> None:
    rendered = render_env_file([])
    assert rendered.count(b"\n") == 1
    assert dotenv_values(stream=io.StringIO(rendered.decode())) == {}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a", "1BAD", b"x")], "not a valid environment variable name"),
        ([("a", "X-Y", b"x")], "not a valid environment variable name"),
        ([("a", "SAME", b"x"), ("b", "SAME", b"y")], "also used by secret 'a'"),
    ],
)
def test_bad_variable_names_are_refused(entries: list[tuple[str, str, bytes]], message: str) -> None:
    with pytest.raises(SinkError, match=message):
        render_env_file(entries)


def test_single_quotes_are_preferred_and_double_quotes_used_only_when_needed() -> None:
    assert quoting_for("$HOME `x`") == "single"
    assert quoting_for("it's") == "double"
    assert quoting_for("it's $HOME") is None
