"""A set of secrets as one JSON, YAML, Java properties or dotenv file: each reads back exactly through its
usual reader (json, yaml.safe_load, javaproperties, python-dotenv), and what a format cannot carry is refused
by key, never by value."""

from __future__ import annotations

import io
import json

import javaproperties
import pytest
import yaml
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.render.formats import OUTPUT_FORMATS, FormatError, OutputFormat, render_format

CANARY = "CANARY-5e1f"
"""A secret value that no message may ever show."""

NASTY = [
    "yes",
    "no",
    "on",
    "null",
    "~",
    "",
    "0123",
    "0x1F",
    "1e3",
    "true",
    "2024-01-01",
    "line one\nline two\n",
    "\n\nleading newlines",
    "trailing spaces   ",
    "  leading spaces",
    "\tleading tab",
    "# not a comment",
    "! not a comment",
    "key: value",
    "a = b",
    "- item",
    "[flow]",
    "{flow: map}",
    "&anchor *alias",
    "!!python/object:os.system",
    "'single' \"double\"",
    "back\\slash\\",
    "\\u0041 is not an escape",
    "line\\\ncontinued?",
    "CR\r\nLF",
    "form\ffeed",
    "NUL\x00byte",
    "bell\x07 and DEL\x7f",
    "C1 \x85 next line \u2028 \u2029",
    "BOM \ufeff inside",
    "é ß 中文 ключ",
    "astral 😀 𝄞",
    "private \ue000 and \ufffd",
    "x" * 500 + " " + "y" * 500,
    "  ".join(["word"] * 100),
    CANARY,
]
NASTY_KEYS = [
    "plain",
    "with space",
    " leading",
    "trailing ",
    "a=b",
    "a:b",
    "#hash",
    "!bang",
    "dotted.key.name",
    "ключ",
    "😀",
    "",
    "tab\tkey",
    "new\nline",
    "yes",
    "null",
    "1",
]

ENTRIES = [(f"key{index}", value.encode()) for index, value in enumerate(NASTY)] + [
    (key, f"value of {key!r}".encode()) for key in NASTY_KEYS
]
EXPECTED = {key: value.decode() for key, value in ENTRIES}


def _read(format: OutputFormat, output: bytes) -> list[tuple[str, str]]:
    """The entries as the format's usual reader sees them, in file order."""
    if format == "json":
        return list(json.loads(output.decode("utf-8"), object_pairs_hook=list))
    if format == "yaml":
        document = yaml.safe_load(output.decode("utf-8"))
        assert isinstance(document, dict)
        return list(document.items())
    if format == "properties":
        return list(javaproperties.loads(output.decode("iso-8859-1"), object_pairs_hook=list))
    values = dotenv_values(stream=io.StringIO(output.decode("utf-8")), interpolate=True)
    return [(key, value if value is not None else "<no value>") for key, value in values.items()]


@pytest.mark.parametrize("format", ["json", "yaml", "properties"])
def test_nasty_values_read_back_exactly(format: OutputFormat) -> None:
    assert _read(format, render_format(format, ENTRIES)) == list(EXPECTED.items())


@pytest.mark.parametrize("format", ["json", "yaml", "properties"])
@pytest.mark.parametrize("value", NASTY)
def test_each_nasty_value_alone(format: OutputFormat, value: str) -> None:
    assert _read(format, render_format(format, [("k", value.encode())])) == [("k", value)]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["json", "yaml", "properties"]),
    st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=8),
)
def test_any_text_reads_back_exactly(format: OutputFormat, entries: dict[str, str]) -> None:
    output = render_format(format, [(key, value.encode()) for key, value in entries.items()])
    assert _read(format, output) == list(entries.items())


def test_properties_file_is_ascii() -> None:
    output = render_format("properties", ENTRIES)
    assert max(output) < 0x80
    assert b"astral \\uD83D\\uDE00 \\uD834\\uDD1E" in output  # surrogate pairs, as Java holds them


@pytest.mark.parametrize(
    ("format", "output"),
    [
        ("json", '{\n  "user": "app",\n  "password": "pä\\u0000ss"\n}\n'),
        ("yaml", '"user": "app"\n"password": "pä\\0ss"\n'),
        ("properties", "user=app\npassword=p\\u00E4\\u0000ss\n"),
    ],
)
def test_output_looks_like_the_format(format: OutputFormat, output: str) -> None:
    assert render_format(format, [("user", b"app"), ("password", "pä\0ss".encode())]).decode() == output


@pytest.mark.parametrize(("format", "output"), [("json", b"{}\n"), ("yaml", b"{}\n"), ("properties", b"")])
def test_no_entries(format: OutputFormat, output: bytes) -> None:
    assert render_format(format, []) == output
    assert _read(format, output) == []


DOTENV_VALUES = [
    "plain",
    "",
    "with space",
    "it's",
    'say "hi"',
    "$HOME is not expanded",
    "line one\nline two",
    "back\\slash",
    "é 😀",
    CANARY,
]


def test_dotenv_reads_back_through_python_dotenv() -> None:
    entries = [(f"VAR_{index}", value.encode()) for index, value in enumerate(DOTENV_VALUES)]
    output = render_format("dotenv", entries)
    assert output.startswith(b"# Written by secrets-agent")
    assert dict(_read("dotenv", output)) == {key: value.decode() for key, value in entries}


@pytest.mark.parametrize(
    ("format", "entries", "message"),
    [
        ("json", [("a", b"1"), ("a", b"2")], "cannot write the json file: key 'a': the key is given twice"),
        ("yaml", [("ok", b"1"), ("bin", b"\xff" + CANARY.encode())], "key 'bin': the value is not UTF-8"),
        ("properties", [("bin", CANARY.encode() + b"\xc3")], "key 'bin': the value is not UTF-8 text"),
        ("json", [("\ud800", CANARY.encode())], "the key is not Unicode text"),
        ("dotenv", [("TOKEN", CANARY.encode() + b"\x00")], "key 'TOKEN': the value contains a NUL character"),
        ("dotenv", [("TOKEN", CANARY.encode() + b"\r\n")], "key 'TOKEN': the value contains a carriage"),
        ("dotenv", [("TOKEN", f"${{{CANARY}}}".encode())], "key 'TOKEN': the value contains '${...}'"),
        ("dotenv", [("TOKEN", f"'`{CANARY}".encode())], "key 'TOKEN': the value mixes a single quote"),
        ("dotenv", [("TOKEN", b"\xff")], "key 'TOKEN': the value is not UTF-8 text"),
        ("dotenv", [("1ST", CANARY.encode())], "key '1ST': not an environment variable name"),
        ("dotenv", [("db.password", CANARY.encode())], "key 'db.password': not an environment variable name"),
        ("dotenv", [("A", b"1"), ("A", b"2")], "key 'A': the key is given twice"),
        ("xml", [("a", CANARY.encode())], "unknown format; expected one of json, yaml, properties, dotenv"),
    ],
)
def test_refused_by_key_never_by_value(format: str, entries: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(FormatError) as caught:
        render_format(format, entries)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "CANARY" not in str(caught.value)
    assert "CANARY" not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_nul_is_fine_except_in_dotenv() -> None:
    entries = [("K", b"a\x00b")]
    for format in ("json", "yaml", "properties"):
        assert _read(format, render_format(format, entries)) == [("K", "a\x00b")]
    with pytest.raises(FormatError, match="NUL"):
        render_format("dotenv", entries)


def test_output_formats_lists_every_format() -> None:
    assert OUTPUT_FORMATS == ("json", "yaml", "properties", "dotenv")
    for format in OUTPUT_FORMATS:
        assert isinstance(render_format(format, [("A", b"x")]), bytes)
