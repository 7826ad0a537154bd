"""Strict YAML reading: duplicate keys are refused (the agent) or collected with their paths (rotation)."""

from __future__ import annotations

import pytest

from agent.config.yaml import DuplicateKey, load_yaml, read_yaml_text
from agent.errors import ConfigError


def test_every_duplicate_is_collected_with_its_path_in_document_order() -> None:
    document = load_yaml(
        "a: 1\nb:\n  c: [x, {d: 1, d: 2}]\n  c: []\na: 3\n'7': q\n7: r\n7: s\n",
        "f.yaml",
    )

    assert document.duplicates == (
        DuplicateKey("a", line=5, first_line=1),
        DuplicateKey("7", line=8, first_line=7),  # '7' and 7 are different keys, as in Python
        DuplicateKey("b.c", line=4, first_line=3),
        DuplicateKey("b.c[1].d", line=3, first_line=3),
    )
    assert document.data == {"a": 3, "b": {"c": []}, "7": "q", 7: "s"}  # PyYAML's own result


def test_merge_keys_and_anchors_are_not_duplicates() -> None:
    document = load_yaml("base: &b {x: 1, y: 2}\nother: {<<: *b, y: 3}\nlist: &l [1]\nagain: *l\n", "f.yaml")

    assert document.duplicates == ()
    assert document.data == {"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}, "list": [1], "again": [1]}


def test_the_agents_reading_still_stops_at_the_first_duplicate_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        read_yaml_text("a: {b: 1, b: 2}\nc: 1\nc: 2\n", "agent.yaml")

    # The top-level mapping's own keys are checked before what is inside them.
    assert [str(p) for p in caught.value.problems] == ["agent.yaml:3: invalid YAML: found duplicate key 'c'"]


@pytest.mark.parametrize(
    "text",
    [
        "token: !!int s3cr3t-canary\n",
        "at: !!timestamp s3cr3t-canary\n",
        "on: !!bool s3cr3t-canary\n",
        "x: !!int \n",
    ],
)
def test_a_value_that_does_not_fit_its_tag_is_a_config_error_without_the_value(text: str) -> None:
    for read in (read_yaml_text, load_yaml):
        with pytest.raises(ConfigError) as caught:
            read(text, "agent.yaml")
        assert [str(p) for p in caught.value.problems] == [
            "agent.yaml: invalid YAML: a value cannot be read (a number of more than 4300 digits, or a value "
            "that does not fit its explicit tag such as !!int or !!timestamp)"
        ]
        assert "canary" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!map x\n", "agent.yaml:1: invalid YAML: expected a mapping node, but found scalar"),
        ("a: !!seq {b: 1}\n", "agent.yaml:1: invalid YAML: expected a sequence node, but found mapping"),
        ("? [a]\n: 1\n", "agent.yaml:1: invalid YAML: found unhashable key"),
    ],
)
def test_structural_tag_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_yaml_text(text, "agent.yaml")
    assert [str(p) for p in caught.value.problems] == [message]


# Documents both loaders read: libyaml's parser under PyYAML's composer must build what the pure-Python
# loader builds, duplicates included.
SAME_DOCUMENTS = [
    "",
    "a: 1\n",
    "a: [1, 2.5, {b: null, c: true}]\nd: 'quoted # not a comment'\ne: \"tab\\tand \\u00e9\"\n",
    "t: 2001-12-14\no: 0o17\nx: 0x1F\nf: .inf\nn: ~\ny: yes\ns: !!str 12\n",
    "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nlist: &l [1]\nagain: *l\n",
    "block: |\n  line one\n  line two\nfolded: >\n  one\n  two\n",
    "a: 1\nb: {c: 1, c: 2}\na: 3\n",
    "- x\n- {y: [z]}\n",
    "unicodé: ✓\n",
]


@pytest.mark.parametrize("text", SAME_DOCUMENTS)
def test_the_libyaml_path_builds_what_the_pure_python_loader_builds(text: str) -> None:
    import yaml

    from agent.config import yaml as config_yaml

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml")
    for collect in (True, False):
        fast = config_yaml._LibyamlStrictLoader(text, collect=collect)
        pure = config_yaml.StrictLoader(text, collect=collect)
        try:
            if not collect and "c: 2" in text:  # a duplicate: both refuse it, at the same place
                with pytest.raises(yaml.MarkedYAMLError) as fast_error:
                    fast.get_single_data()
                with pytest.raises(yaml.MarkedYAMLError) as pure_error:
                    pure.get_single_data()
                assert str(fast_error.value.problem) == str(pure_error.value.problem)
                assert fast_error.value.problem_mark is not None
                assert pure_error.value.problem_mark is not None
                assert fast_error.value.problem_mark.line == pure_error.value.problem_mark.line
                continue
            assert fast.get_single_data() == pure.get_single_data()
            assert fast.duplicates == pure.duplicates
        finally:
            fast.dispose()
            pure.dispose()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("project: [unclosed\n", "agent.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        # Refused by the reader before any parsing (a traceback, before): located at its line.
        (
            "a: 1\nb: \x07\n",
            "agent.yaml:2: invalid YAML: character #x0007: special characters are not allowed",
        ),
        ("a: b: c\n", "agent.yaml:1: invalid YAML: mapping values are not allowed here"),
        ("[" * 100, "agent.yaml:1: invalid YAML: nested more than 64 levels deep"),
    ],
)
def test_errors_keep_pyyaml_s_own_words_and_lines(text: str, message: str) -> None:
    # libyaml words its errors differently: the pure-Python loader reads a refused document again.
    with pytest.raises(ConfigError) as caught:
        read_yaml_text(text, "agent.yaml")
    assert [str(p) for p in caught.value.problems] == [message]


def test_pyyaml_is_imported_without_compiling_its_non_printable_pattern() -> None:
    # In a fresh interpreter, as the agent starts: the pattern compiles when the pure-Python reader first
    # needs it, and then refuses what it always refused.
    import subprocess
    import sys

    code = (
        "import re, agent.config.yaml as c, yaml\n"
        "stand_in = yaml.reader.Reader.NON_PRINTABLE\n"
        "assert type(stand_in).__name__ == '_CompiledWhenUsed', type(stand_in)\n"
        "assert c._NON_PRINTABLE == stand_in._pattern\n"
        "assert all(v is not stand_in for v in re._cache.values())\n"  # nobody else is handed it
        "assert stand_in._compiled is None\n"
        "try:\n"
        "    yaml.safe_load('a: \\x07')\n"
        "except yaml.reader.ReaderError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('a control character was accepted')\n"
        "assert stand_in._compiled is not None and stand_in.pattern == c._NON_PRINTABLE\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_stand_in_is_pyyaml_s_pattern_character_for_character() -> None:
    # The key under which re's cache hands out the stand-in: if PyYAML changes its pattern, the stand-in is
    # simply not used (and this test says so).
    import inspect

    import yaml.reader

    from agent.config import yaml as config_yaml

    source = inspect.getsource(yaml.reader.Reader)
    literal = source.split("NON_PRINTABLE = re.compile(", 1)[1].split(")\n", 1)[0]
    assert eval(literal) == config_yaml._NON_PRINTABLE  # PyYAML's own string literal
