"""Values round-trip exactly through python-dotenv; editing one key keeps the rest of the file verbatim."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.render.envfile import value_problem as env_file_value_problem
from agent.secrets import LocalSecretManager, SecretType
from agent.secrets.envedit import remove, render, set_value, split, value_problem, values

# The characters that make quoting hard (as in the env-file writer's tests), plus harmless ones.
HARD = [*"'\"$\\`#{}()\n\r \t=!*@?-_:%~[]aZ9", "é", "中", "😀", "\u00a0", "\x0b", "\x0c", "\x85", "\u2028"]
hard_text = st.text(alphabet=st.sampled_from(HARD), max_size=16)
any_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40)
texts = st.one_of(hard_text, any_text, st.sampled_from(["", "$", "\\", "'", "${X}", "it's $HOME", "a\r\nb"]))
# What the env-file writer (agent.render.envfile) accepts: every such value must round-trip here too.
writer_values = texts.filter(lambda t: env_file_value_problem(t.encode()) is None)

PREAMBLE = "# comment = 'not a value'\nOTHER=keep me  # inline\n\nexport EXPORTED='x'\nNOVALUE\n"


@settings(max_examples=400, deadline=None)
@given(text=texts)
def test_every_text_without_nul_round_trips_through_python_dotenv(text: str) -> None:
    edited = set_value(PREAMBLE, "KEY", text.encode())
    assert values(edited)["KEY"] == text
    assert values(edited)["OTHER"] == "keep me"
    assert edited.startswith(PREAMBLE)
    # And replacing it again, in place, keeps everything around it.
    again = set_value(edited + "LAST=1\n", "KEY", b"second")
    assert values(again) == {"OTHER": "keep me", "EXPORTED": "x", "KEY": "second", "LAST": "1"}
    assert again == PREAMBLE + "KEY='second'\nLAST=1\n"


@settings(max_examples=60, deadline=None)
@given(value=writer_values)
def test_every_value_the_env_file_writer_can_produce_round_trips_through_local_secret_manager(
    value: str,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ".env"
        path.write_text(PREAMBLE)
        manager = LocalSecretManager(path, caller="hypothesis")
        asyncio.run(manager.create_secret("KEY", "placeholder", SecretType.API_KEY))
        asyncio.run(manager.add_version("KEY", value))
        assert asyncio.run(manager.get_secret("KEY")) == value
        # python-dotenv reads the file back exactly, with and without interpolation (the writer's values
        # contain no ${...}), and the rest of the file is untouched.
        assert dotenv_values(path, interpolate=False)["KEY"] == value
        assert dotenv_values(path)["KEY"] == value
        assert path.read_text().startswith(PREAMBLE)
        # Without the sidecar, the .env alone still yields the value.
        manager.sidecar.unlink()
        assert asyncio.run(LocalSecretManager(path).get_secret("KEY")) == value


@pytest.mark.parametrize(
    ("text", "key", "value", "expected"),
    [
        ("", "A", b"1", "A='1'\n"),
        ("B=2", "A", b"1", "B=2\nA='1'\n"),  # a file without a final newline gets one before the new line
        ("A=old # note\nB=2\n", "A", b"new", "A='new'\nB=2\n"),
        ("export A=old\n", "A", b"new", "export A='new'\n"),
        ("A=first\nA=second\n", "A", b"x", "A=first\nA='x'\n"),  # the binding python-dotenv uses
        ('A="multi\nline"\nB=2\n', "A", b"one", "A='one'\nB=2\n"),
        ("# c\n\n\nA=1\n", "A", b"2", "# c\n\n\nA='2'\n"),
        ("A=1", "A", b"2", "A='2'"),
        ("A=1\n", "A", b"it's", 'A="it\'s"\n'),
        ("A=1\n", "A", b"a\rb", 'A="a\\rb"\n'),  # only python-dotenv can read a CR back
    ],
)
def test_set_value(text: str, key: str, value: bytes, expected: str) -> None:
    assert set_value(text, key, value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=2\n", "B=2\n"),
        ("# c\n\nA=1\nB=2\n", "# c\n\nB=2\n"),
        ("A=1\nB=2\nA=3\n", "B=2\n"),
        ('B=2\nA="x\ny"\n', "B=2\n"),
        ("B=2\n", "B=2\n"),
    ],
)
def test_remove(text: str, expected: str) -> None:
    assert remove(text, "A") == expected


def test_split_covers_the_whole_file_including_invalid_lines() -> None:
    text = "# c\nnot a binding at all\nA='x'\n  B = 2 \n"
    assert "".join(chunk.text for chunk in split(text)) == text
    assert values(text) == {"A": "x", "B": "2"}


def test_values_a_text_file_cannot_hold_are_refused_by_reason() -> None:
    assert value_problem(b"ok") is None
    assert "not UTF-8" in (value_problem(b"\xff") or "")
    assert "NUL" in (value_problem(b"a\0b") or "")
    with pytest.raises(ValueError, match=r"^K: the value contains a NUL"):
        render("K", b"a\0b")
