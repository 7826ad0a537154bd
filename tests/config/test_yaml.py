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
