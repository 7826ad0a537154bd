"""Key extraction from JSON and YAML secrets: the key paths users write, the values they get, and payloads
that are broken or hostile failing with a message that names the path, never a value."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.render.keys import (
    MAX_PAYLOAD_BYTES,
    ExtractError,
    KeyPath,
    decode_payload,
    extract,
    extract_key,
    format_key_path,
    parse_key_path,
    parse_payload,
    value_bytes,
)

CANARY = "CANARY-5e1f"
"""A secret value (and payload key) that no message may ever show."""


# --- key paths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("password", ("password",)),
        ("db.primary.password", ("db", "primary", "password")),
        ("hosts[0]", ("hosts", 0)),
        ("a.b[2].c", ("a", "b", 2, "c")),
        ("m[10][0]", ("m", 10, 0)),
        ("[0].name", (0, "name")),
        ('labels["app.kubernetes.io/name"]', ("labels", "app.kubernetes.io/name")),
        ("a['x.y'].z", ("a", "x.y", "z")),
        ('a["say \\"hi\\""]', ("a", 'say "hi"')),
        ("a['it\\'s']", ("a", "it's")),
        ('a["back\\\\slash"]', ("a", "back\\slash")),
        ('a["with space"]', ("a", "with space")),
        ('a[""]', ("a", "")),
        ('["/leading"]', ("/leading",)),
        ("db-password.user_name", ("db-password", "user_name")),
        ("pässwort.ключ", ("pässwort", "ключ")),
        ("a.0", ("a", "0")),  # a dotted name is a key, never an index
        ("/db/key.with.dots/0", ("db", "key.with.dots", 0)),
        ("/a~1b/c~0d", ("a/b", "c~d")),
        ("/~01", ("~1",)),  # ~0 then 1, not ~ then ~1 (RFC 6901's order)
        ("/list/01", ("list", "01")),  # not a canonical index: a key
        ("/", ("",)),
        ("/a//b", ("a", "", "b")),
        ("/with space/[x]", ("with space", "[x]")),
        (".".join(["k"] * 64), ("k",) * 64),
    ],
)
def test_parse_key_path(text: str, path: KeyPath) -> None:
    assert parse_key_path(text) == path


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must not be empty"),
        ("a..b", "empty segment"),
        ("a.", "cannot end with '.'"),
        (".a", "cannot start with '.'"),
        ("a b", "quoted brackets"),
        (" a", "quoted brackets"),
        ("a[01]", "without leading zeros"),
        ("a[-1]", "list index"),
        ("a[]", "list index"),
        ("a[x]", "quoted key"),
        ("a[0", "without a closing ']'"),
        ('a["x]', "without its closing"),
        ('a["x"', "expected ']'"),
        ('a["x\\n"]', "escapes only"),
        ("a]", "']' cannot be in a key name"),
        ('a"b', "cannot be in a key name"),
        ("a[0]b", "expected '.' or '['"),
        ("a.[0]", "followed by a key name"),
        ("a\nb", "control character (U+000A)"),
        ("a\x00", "NUL"),
        ("/a\x7f", "control character"),
        ("/a~2", "RFC 6901"),
        ("/a~", "RFC 6901"),
        (".".join(["k"] * 65), "at most 64 are allowed"),
        ("k" * 1025, "at most 1024 characters"),
    ],
)
def test_parse_key_path_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_key_path(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a['x.y'].z", 'a["x.y"].z'),
        ("/db/key.with.dots/0", 'db["key.with.dots"][0]'),
        ("/a~1b", "a/b"),
        ("/", '[""]'),
        ("/~1x", '["/x"]'),  # a leading '/' would read as a pointer
        ("a['it\\'s']", 'a["it\'s"]'),
        ('a["q\\"\\\\"]', 'a["q\\"\\\\"]'),
        ("a.0[0]", "a.0[0]"),
    ],
)
def test_format_key_path_is_canonical(text: str, canonical: str) -> None:
    assert format_key_path(parse_key_path(text)) == canonical
    assert parse_key_path(canonical) == parse_key_path(text)


_SEGMENTS = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12),
)


@given(st.lists(_SEGMENTS, min_size=1, max_size=64).map(tuple))
def test_format_key_path_round_trips(path: KeyPath) -> None:
    text = format_key_path(path)
    if len(text) <= 1024:
        assert parse_key_path(text) == path


def test_format_key_path_escapes_what_no_text_can_hold() -> None:
    shown = format_key_path(("a", "line\nbreak"))
    assert "\n" not in shown
    with pytest.raises(ValueError, match="escapes only"):
        parse_key_path(shown)


# --- extraction ------------------------------------------------------------------------------------------

SERVICE = json.dumps(
    {
        "db": {"primary": {"password": CANARY, "port": 5432, "ratio": 0.5}, "ssl": True},
        "hosts": ["db-1", "db-2"],
        "labels": {"app.kubernetes.io/name": "api", "": "empty"},
        "nested": {"zeta": 1, "alpha": ["ü", None, False], "0": "key zero"},
        "nothing": None,
    }
).encode()

SETTINGS_YAML = f"""\
db:
  password: {CANARY}
  port: 5432
hosts:
  - db-1
  - db-2
2: two
false: no-key
2.5: float-key
null: null-key
on: yaml-1.1-true
"2": string-two
expires: 2024-01-01
stamp: 2001-12-14t21:59:43.10-05:00
octal: 0o17
cert: !!binary aGVsbG8=
base: &base {{user: app, pool: 3}}
copy:
  <<: *base
  pool: 4
""".encode()


@pytest.mark.parametrize(
    ("payload", "path", "value"),
    [
        (SERVICE, "db.primary.password", CANARY.encode()),
        (SERVICE, "/db/primary/password", CANARY.encode()),
        (SERVICE, "db.primary.port", b"5432"),
        (SERVICE, "db.primary.ratio", b"0.5"),
        (SERVICE, "db.ssl", b"true"),
        (SERVICE, "nested.alpha[2]", b"false"),
        (SERVICE, "hosts[1]", b"db-2"),
        (SERVICE, "/hosts/0", b"db-1"),
        (SERVICE, 'labels["app.kubernetes.io/name"]', b"api"),
        (SERVICE, "/labels/app.kubernetes.io~1name", b"api"),  # the pointer's ~1 is the key's '/'
        (SERVICE, "/labels/app.kubernetes.io/name", None),  # without it, two segments
        (SERVICE, 'labels[""]', b"empty"),
        (SERVICE, "/labels/", b"empty"),
        (SERVICE, "/nested/0", b"key zero"),  # a digit segment on a mapping is a key
        (SERVICE, "nested[0]", b"key zero"),
        (SERVICE, "nested.0", b"key zero"),
        # Mappings and lists are compact JSON, in document order, non-ASCII kept.
        (SERVICE, "nested", '{"zeta":1,"alpha":["ü",null,false],"0":"key zero"}'.encode()),
        (SERVICE, "hosts", b'["db-1","db-2"]'),
        (SETTINGS_YAML, "db.password", CANARY.encode()),
        (SETTINGS_YAML, "hosts[0]", b"db-1"),
        (SETTINGS_YAML, "2", b"string-two"),  # a string key wins over the int key of the same text
        (SETTINGS_YAML, "false", b"no-key"),
        (SETTINGS_YAML, '["2.5"]', b"float-key"),
        (SETTINGS_YAML, "null", b"null-key"),
        (SETTINGS_YAML, "true", b"yaml-1.1-true"),
        (SETTINGS_YAML, "expires", b"2024-01-01"),  # timestamps stay the text that was written
        (SETTINGS_YAML, "stamp", b"2001-12-14t21:59:43.10-05:00"),
        (SETTINGS_YAML, "octal", b"0o17"),  # YAML 1.1 has no 0o: a string
        (SETTINGS_YAML, "cert", b"hello"),  # !!binary is delivered as its bytes
        (SETTINGS_YAML, "copy", b'{"user":"app","pool":4}'),  # merge keys work, overrides win
        (SETTINGS_YAML, "base.user", b"app"),
        (b"1: one\nlist: [a]\n", "1", b"one"),  # an int key, by its text
        (b"1: one\n", "[1]", b"one"),
        (b"1: one\n", "/1", b"one"),
        (b"[[1, 2], [3]]", "[0][1]", b"2"),
        (b"[[1, 2], [3]]", "/1/0", b"3"),
        (b'{"big": 123456789012345678901234567890}', "big", b"123456789012345678901234567890"),
        (b'{"f": 1e400}', "other", None),  # an overflowing number elsewhere does not matter
        ('\ufeff{"bom": "ok"}'.encode(), "bom", b"ok"),
        (b'  \n {"a": "json with leading blanks"}', "a", b"json with leading blanks"),
        (b'{"multi": "line\\nvalue"}', "multi", b"line\nvalue"),
        (b'{"nul": "a\\u0000b"}', "nul", b"a\x00b"),
    ],
)
def test_extract(payload: bytes, path: str, value: bytes | None) -> None:
    if value is None:
        with pytest.raises(ExtractError, match="not found"):
            extract(payload, parse_key_path(path))
    else:
        assert extract(payload, parse_key_path(path)) == value


@pytest.mark.parametrize(
    ("payload", "path", "message"),
    [
        (SERVICE, "db.primary.user", "key 'db.primary.user' not found: 'user' is missing under 'db.primary'"),
        (SERVICE, "db.secondary.password", "'secondary' is missing under 'db'"),
        (SERVICE, "password", "key 'password' not found: 'password' is missing at the top level"),
        (SERVICE, "hosts[3]", "key 'hosts[3]' not found: index 3 is out of range for the list 'hosts'"),
        (
            SERVICE,
            "hosts.first",
            "'hosts' is a list, not a mapping; address its items by index, as in 'hosts[0]'",
        ),
        (SERVICE, "hosts.0", "as in 'hosts[0]'"),
        (SERVICE, "db.primary.password.x", "'db.primary.password' is a string, not a mapping or a list"),
        (SERVICE, "db.primary.password[0]", "'db.primary.password' is a string"),
        (SERVICE, "db.primary.port.x", "'db.primary.port' is a number"),
        (SERVICE, "db.ssl.x", "'db.ssl' is a boolean"),
        (SERVICE, "nothing.x", "'nothing' is null"),
        (SERVICE, "nothing", "key 'nothing' is null"),
        (SERVICE, "nested.alpha[1]", "key 'nested.alpha[1]' is null"),
        (SERVICE, "/db/primary/pass~1word", "key 'db.primary.pass/word' not found"),
        (b"[1, 2]", "a", "the top level is a list, not a mapping; address its items by index, as in '[0]'"),
        (b"[1, 2]", "[2]", "index 2 is out of range for the top-level list"),
        (f'"{CANARY}"'.encode(), "a", None),  # auto: a string is not a document
        (f'{{"{CANARY}": {{"{CANARY}x": 1}}}}'.encode(), "other", "'other' is missing at the top level"),
        (f'{{"a": "{CANARY}", "b": {{"{CANARY}": 1}}}}'.encode(), "b.c", "'c' is missing under 'b'"),
        (b"a: .nan\n", "a", "key 'a' is not a finite number"),
        (b'{"f": 1e400}', "f", "key 'f' is not a finite number"),
        (b"a: {b: .inf}\n", "a", "key 'a' holds a value with no JSON form"),
        (b"a: {b: !!binary aGk=}\n", "a", "key 'a' holds a value with no JSON form"),
        (b'{"a": "\\ud800"}', "a", "key 'a' holds text that is not Unicode"),
        (b'{"a": ["\\udfff"]}', "a", "key 'a' holds text that is not Unicode"),
    ],
)
def test_extract_errors_name_the_path_never_the_payload(
    payload: bytes, path: str, message: str | None
) -> None:
    with pytest.raises(ExtractError) as caught:
        extract(payload, parse_key_path(path))
    text = str(caught.value)
    if message is not None:
        assert message in text
    for shown in (text, repr(caught.value)):
        assert CANARY not in shown
        assert "CANARY" not in shown


def test_a_payload_without_a_path_is_delivered_unchanged() -> None:
    payload = b"\xff\x00 not a document: {"
    assert extract(payload, None) == payload
    assert extract(base64.b64encode(payload), None, decode="base64") == payload


def test_an_explicit_format_reads_what_auto_would_not() -> None:
    assert parse_payload(b"plain: yaml", "yaml") == {"plain": "yaml"}
    assert parse_payload(b"hunter2", "yaml") == "hunter2"
    assert parse_payload(b'"text"', "json") == "text"
    assert extract(b'  {"a": 1}', ("a",), format="yaml") == b"1"  # JSON is YAML
    with pytest.raises(ExtractError, match="not valid JSON"):
        parse_payload(b"a: b", "json")
    with pytest.raises(ExtractError, match="is a string"):
        extract(b"hunter2", ("a",), format="yaml")


@pytest.mark.parametrize(
    ("value", "delivered"),
    [
        ("text", b"text"),
        ("ü\n", "ü\n".encode()),
        ("", b""),
        (True, b"true"),
        (False, b"false"),
        (0, b"0"),
        (-12, b"-12"),
        (1.25, b"1.25"),
        (1e100, b"1e+100"),
        (b"\x00\xff", b"\x00\xff"),
        ({"b": 1, "a": [True, None]}, b'{"b":1,"a":[true,null]}'),
        ([], b"[]"),
        ({"ключ": "é"}, '{"ключ":"é"}'.encode()),
    ],
)
def test_value_bytes(value: object, delivered: bytes) -> None:
    assert value_bytes(value, path=("k",)) == delivered


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "key 'k' is null"),
        (float("nan"), "not a finite number"),
        (float("-inf"), "not a finite number"),
        ({"a": float("nan")}, "no JSON form"),
        ({(1, 2): 1}, "no JSON form"),
        ({"a": {1, 2}}, "no JSON form"),
        (object(), "has no text to deliver"),
    ],
)
def test_value_bytes_refuses(value: object, message: str) -> None:
    with pytest.raises(ExtractError, match=message):
        value_bytes(value, path=("k",))


def test_extract_key_needs_a_non_negative_index() -> None:
    with pytest.raises(ExtractError, match="index -1 is out of range"):
        extract_key(["a", "b"], (-1,))


# --- base64 ----------------------------------------------------------------------------------------------

_BINARY = bytes(range(256)) + b"\xfb\xff"


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(_BINARY),
        base64.urlsafe_b64encode(_BINARY),
        base64.b64encode(_BINARY).rstrip(b"="),
        base64.urlsafe_b64encode(_BINARY).rstrip(b"="),
        b"\n  " + base64.b64encode(_BINARY) + b"\r\n",
        base64.encodebytes(_BINARY),  # wrapped at 76 columns, as the base64 tool writes
    ],
)
def test_decode_base64(encoded: bytes) -> None:
    assert decode_payload(encoded, "base64") == _BINARY


@pytest.mark.parametrize("padding", ["", "=", "=="])
@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd"])
def test_decode_base64_padding_is_optional(data: bytes, padding: str) -> None:
    encoded = base64.b64encode(data).rstrip(b"=")
    needed = -len(encoded) % 4
    if padding and len(padding) != needed:
        with pytest.raises(ExtractError, match="not valid base64"):
            decode_payload(encoded + padding.encode(), "base64")
    else:
        assert decode_payload(encoded + padding.encode(), "base64") == data


@pytest.mark.parametrize(
    "encoded",
    [
        b"abc$",
        b"a",  # one character is no byte
        b"abcde",
        b"ab=c",
        b"ab===",
        b"ab+_",  # the two alphabets mixed
        b"=",
        "québec".encode(),
        CANARY.encode() + b"!",
    ],
)
def test_decode_base64_refuses(encoded: bytes) -> None:
    with pytest.raises(ExtractError) as caught:
        decode_payload(encoded, "base64")
    assert str(caught.value) == "the payload is not valid base64"


def test_decode_then_extract() -> None:
    payload = base64.b64encode(SERVICE)
    assert extract(payload, ("hosts", 0), decode="base64") == b"db-1"


# --- broken and hostile payloads -------------------------------------------------------------------------


def _nested_json(levels: int) -> bytes:
    return b'{"a":' * levels + f'"{CANARY}"'.encode() + b"}" * levels


def _nested_yaml(levels: int) -> bytes:
    lines = [f"{'  ' * level}a:" for level in range(levels)]
    return ("\n".join(lines) + f" {CANARY}\n").encode()


@pytest.mark.parametrize("payload", [_nested_json(64), _nested_yaml(64), b"[" * 64 + b"1" + b"]" * 64])
def test_64_levels_deep_is_read(payload: bytes) -> None:
    document = parse_payload(payload, "auto")
    if isinstance(document, dict):
        assert extract_key(document, ("a",) * 64) == CANARY
    else:
        assert extract_key(document, (0,) * 64) == 1


BILLION_LAUGHS = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n".encode() for i in range(9)
)
MERGE_BOMB = b"l0: &l0 {a: 1, b: 2}\n" + b"".join(
    f"l{i + 1}: &l{i + 1} {{<<: [*l{i}, *l{i}, *l{i}, *l{i}]}}\n".encode() for i in range(30)
)
SCALAR_BOMB = f"s: &s {CANARY}{'x' * 60_000}\nlist: [{', '.join(['*s'] * 100)}]\n".encode()


@pytest.mark.parametrize(
    ("payload", "format", "message"),
    [
        (b"\xff\xfe{}", "auto", "the payload is not UTF-8 text"),
        (b"a" * (MAX_PAYLOAD_BYTES + 1), "yaml", "larger than 1 MiB"),
        (_nested_json(65), "auto", "nested more than 64 levels deep"),
        (_nested_yaml(65), "auto", "nested more than 64 levels deep"),
        (b"[" * 65 + b"]" * 65, "yaml", "nested more than 64 levels deep"),
        (b"[" * 200_000 + b"]" * 200_000, "json", "nested more than 64 levels deep"),
        (b"[" * 20_000, "yaml", "nested more than 64 levels deep"),
        (b"- " * 10_000 + b"x", "yaml", "nested more than 64 levels deep"),
        (b"[" * 200_000, "yaml", "a YAML payload is at most 64 KiB"),
        (BILLION_LAUGHS, "auto", "aliases expand it beyond"),
        (MERGE_BOMB, "auto", "aliases expand it beyond"),
        (SCALAR_BOMB, "auto", "aliases expand it beyond"),
        (b"a: &a [*a]\n", "auto", "contains itself through an alias"),
        (b"a: &a {b: *a}\n", "auto", "contains itself through an alias"),
        (f'{{"a": "{CANARY}", "b": NaN}}'.encode(), "json", "NaN and Infinity are not JSON numbers"),
        (b'{"a": -Infinity}', "json", "NaN and Infinity"),
        (f'{{"{CANARY}": 1, "{CANARY}": 2}}'.encode(), "json", "duplicate key in a JSON object"),
        (f"a: 1\n{CANARY}: 1\n{CANARY}: 2\n".encode(), "yaml", "duplicate key (line 3)"),
        (b"1: a\ntrue: b\n", "yaml", "duplicate key (line 2)"),  # equal keys to Python
        (
            f'{{"a": "{CANARY}" "b"}}'.encode(),
            "json",
            "not valid JSON: Expecting ',' delimiter (line 1, column",
        ),
        (f'{{"a": "{CANARY}'.encode(), "json", "not valid JSON: Unterminated string"),
        (b"[" + b"9" * 5000 + b"]", "json", "more than 4300 digits"),
        (
            f"a: !!python/object/apply:os.system ['{CANARY}']\n".encode(),
            "yaml",
            "safe loader cannot build: an unknown or unsafe tag",
        ),
        (f"a: !{CANARY} x\n".encode(), "yaml", "safe loader cannot build: an unknown or unsafe tag"),
        (f"a: *{CANARY}\n".encode(), "yaml", "not valid YAML (line 1, column 4)"),
        (f"a: !!int {CANARY}\n".encode(), "yaml", "a value cannot be read"),
        (f"a: !!binary '{CANARY}'\n".encode(), "yaml", "safe loader cannot build"),
        (b"a: !!int " + b"9" * 5000 + b"\n", "yaml", "a value cannot be read"),
        (b"? [a]\n: b\n", "yaml", "or an unhashable key"),
        (b"a: !!int \n", "yaml", "a value cannot be read"),
        (b"a: !!float x\n", "yaml", "a value cannot be read"),
        (f"a: {CANARY}\n\x07\n".encode(), "yaml", "a character YAML does not allow"),
        (f"a: '{CANARY}\n".encode(), "yaml", "not valid YAML (line"),
        (f"a: {CANARY}\n---\nb: 1\n".encode(), "yaml", "not valid YAML (line 2"),
        (f"\t{CANARY}: x".encode(), "yaml", "not valid YAML"),
        (CANARY.encode(), "auto", "the payload is not a JSON or YAML document; set format"),
        (b"", "auto", "not a JSON or YAML document"),
        (b"42", "auto", "not a JSON or YAML document"),
    ],
)
def test_payload_refused(payload: bytes, format: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExtractError) as caught:
        parse_payload(payload, format)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2, "a hostile payload must be cheap to refuse"
    assert message in str(caught.value)
    assert "CANARY" not in str(caught.value)
    # No chained exception either: PyYAML's and json's own messages may quote the payload.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_aliases_that_expand_a_little_are_fine() -> None:
    payload = b"defaults: &d {user: app}\nprod: {<<: *d, db: p}\nlist: [*d, *d]\n"
    assert extract(payload, ("prod",)) == b'{"user":"app","db":"p"}'
    assert extract(payload, ("list",)) == b'[{"user":"app"},{"user":"app"}]'


_YAML_ALPHABET = st.sampled_from(
    [*"ab1:- \n\t[]{},&*!?|>'\"#%@`~.\\", "!!binary ", "!!int ", "<<: ", "&a ", "*a", "---\n", "\x85"]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.lists(_YAML_ALPHABET, max_size=60).map("".join).map(str.encode)))
def test_any_payload_parses_or_is_refused_cleanly(payload: bytes) -> None:
    for format in ("auto", "json", "yaml"):
        try:
            document = parse_payload(payload, format)
        except ExtractError:
            continue
        with contextlib.suppress(ExtractError):
            value_bytes(document, path=("k",))
