"""The generated reference pages (``docs/reference/``) are what the code generates, and they cover what
the code has: every setting, flag, variable, command, route, metric and annotation.

When the first test fails, regenerate the pages with ``python -m docs_gen`` (from the repository, in its
virtual environment) and commit them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

import agent.secrets
from agent import cli
from agent.config import SECRET_FLAG, schema
from agent.config.loader import _Reader
from agent.core.store import SnapshotStore
from agent.observe.metrics import Metrics
from agent.webhook import annotations as webhook_annotations
from agent.webhook import shaping
from docs_gen import (
    COMMAND,
    DOCS,
    PAGES,
    ROOT,
    configuration,
    endpoint,
    generate,
    pod_annotations,
    python_api,
)
from docs_gen import cli as cli_page
from docs_gen.configuration import anchor, field_docs


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return generate()


def ids(text: str) -> set[str]:
    """Every anchor a page defines: ``<a id="...">`` and headings' ``{#...}``."""
    return set(re.findall(r'<a id="([^"]+)"></a>', text)) | set(re.findall(r"\{#([^}\s]+)\}", text))


# --- the committed pages are current ------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PAGES))
def test_the_committed_page_is_what_the_code_generates(pages: dict[str, str], path: str) -> None:
    committed = DOCS / path
    assert committed.exists(), f"docs/{path} is missing: run `{COMMAND}`"
    assert committed.read_text(encoding="utf-8") == pages[path], (
        f"docs/{path} is out of date with the code: run `{COMMAND}` and commit the result"
    )


def test_generation_is_deterministic(pages: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing of the machine: not the terminal's width (argparse wraps at $COLUMNS), not the checkout's path.
    monkeypatch.setenv("COLUMNS", "37")
    assert generate() == pages
    for path, text in pages.items():
        assert str(ROOT) not in text, f"docs/{path} holds an absolute path"


def test_no_page_id_is_defined_twice(pages: dict[str, str]) -> None:
    for path, text in pages.items():
        if path.endswith(".md"):
            found = re.findall(r'<a id="([^"]+)"></a>', text) + re.findall(r"\{#([^}\s]+)\}", text)
            assert len(found) == len(set(found)), (
                f"docs/{path}: {sorted(i for i in found if found.count(i) > 1)}"
            )


# --- configuration ------------------------------------------------------------------------------------------


def schema_fields(cls: type[Any] = schema.Config, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(key path, field, metadata) of every setting, walked from the dataclasses themselves."""
    for f in dataclasses.fields(cls):
        meta = schema._meta(f)
        key_path = f"{path}.{f.name}" if path else f.name
        if isinstance(meta, schema.Section):
            assert isinstance(f.default_factory, type)
            yield from schema_fields(f.default_factory, key_path)
        elif isinstance(meta, schema.Items):
            yield key_path, f, meta
            yield from schema_fields(meta.item, key_path + "[]")
        else:
            yield key_path, f, meta


def test_every_setting_of_the_schema_has_a_row(pages: dict[str, str]) -> None:
    page = pages["reference/configuration.md"]
    for key_path, _, _ in schema_fields():
        assert f"`{key_path}`" in page, key_path
        assert anchor(key_path) in ids(page), key_path
    assert sorted(path for path, _, _ in schema_fields()) == sorted(configuration.settings())


def test_every_variable_the_loader_reads_is_documented(pages: dict[str, str]) -> None:
    page = pages["reference/configuration.md"]
    reader = _Reader(env={}, flags={})
    reader.section(schema.Config, {}, "", layered=True)
    assert reader.env_used, "the loader read no variable: the test no longer sees what it reads"
    for name in reader.env_used:
        assert f"`{name}`" in page, name
    for _, _, meta in schema_fields():
        if isinstance(meta, schema.Setting) and meta.fallback_env:
            assert f"then `{meta.fallback_env}`" in page
    for name in (schema.CONFIG_FILE_ENV, schema.CONFIG_YAML_ENV):
        assert f"`{name}`" in page


def test_every_config_flag_is_documented_with_its_setting(pages: dict[str, str]) -> None:
    page = pages["reference/configuration.md"]
    rows = {line.split("`")[1]: line for line in page.splitlines() if line.startswith("| <a id=")}
    for flag in cli.ALL_FLAGS:
        assert f"`{flag.flag}" in rows[flag.path], (flag.flag, flag.path)
    assert f"`{SECRET_FLAG} NAME=REF`" in page


_END = r"(?=[.;,:](?:\s|$)|$|\s\()"
_VALUE = r"(?:``(?P<code>[^`]+)``|(?P<word>\d[\w.]*\w|\d|true|false|none))"
_STATED = (
    re.compile(r"\bDefault:? " + _VALUE + _END),
    re.compile(r"``(?P<code>[^`]+)`` \(default\)"),
    re.compile(r"\(default:? (?P<word>true|false|none|\d[\w.]*)\)"),
    re.compile(r"\b(?P<word>[Tt]rue|[Ff]alse) \(default\)"),
)


def stated_defaults(doc: str) -> list[str]:
    """The defaults a field's docstring states: ``Default 300``, ``Default ``0440````, ``auto (default)``."""
    text = " ".join(doc.split())
    found = [m.groupdict() for pattern in _STATED for m in pattern.finditer(text)]
    return [groups.get("code") or groups["word"] for groups in found]


def test_the_defaults_the_docstrings_state_are_the_real_ones() -> None:
    # The reference shows each real default; the descriptions next to it must not say another one. (This
    # replaces a hand-kept table of defaults in tests/config/test_config.py.)
    checked = 0
    for key_path, f, meta in schema_fields():
        if not isinstance(meta, schema.Setting):
            continue
        owner = next(c for c in _owners() if f in dataclasses.fields(c))
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue  # required
        if default == "":
            continue  # derived from another field (a secret's env and file from its name)
        for stated in stated_defaults(field_docs(owner).get(f.name, "")):
            checked += 1
            if stated == "none" and default in (None, ()):
                continue
            assert meta.parse(stated) == default, (
                f"{key_path}: the docstring says {stated!r}, the default is {default!r}"
            )
    assert checked >= 40, f"only {checked} stated defaults found: has the docstrings' wording changed?"


def _owners() -> list[type[Any]]:
    found: list[type[Any]] = [schema.Config]
    for cls in found:
        for f in dataclasses.fields(cls):
            meta = schema._meta(f)
            if isinstance(meta, schema.Section) and isinstance(f.default_factory, type):
                found.append(f.default_factory)
            elif isinstance(meta, schema.Items):
                found.append(meta.item)
    return found


def test_every_setting_has_a_description() -> None:
    for block in configuration.blocks():
        for row in block.rows:
            assert row.description, f"{row.path} has no docstring in agent/config/schema.py"


# --- command line -------------------------------------------------------------------------------------------


def test_every_command_and_option_is_documented(pages: dict[str, str]) -> None:
    page = pages["reference/cli.md"]
    program = cli.build_parser()
    listed = next(a for a in program._actions if isinstance(a, argparse._SubParsersAction))
    documented = cli_page.commands()
    for name in listed.choices:
        assert f"secrets-agent {name}" in documented, name
    for parser in cli_page.parsers():
        assert f"## `{parser.prog}` {{#{cli_page.command_anchor(parser.prog)}}}" in page, parser.prog
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}`" in page, (parser.prog, option)


def test_the_cli_page_links_each_config_flag_to_its_setting(pages: dict[str, str]) -> None:
    page, settings = pages["reference/cli.md"], ids(pages["reference/configuration.md"])
    links = re.findall(r"\]\(configuration\.md#([^)]+)\)", page)
    assert {anchor(flag.path) for flag in cli.ALL_FLAGS} <= set(links)
    assert set(links) <= settings


# --- endpoint -----------------------------------------------------------------------------------------------


def test_every_route_response_and_schema_of_the_openapi_document_is_documented(pages: dict[str, str]) -> None:
    page, doc = pages["reference/endpoint.md"], json.loads((ROOT / "agent/endpoint/openapi.json").read_text())
    assert pages["reference/openapi.json"] == (ROOT / "agent/endpoint/openapi.json").read_text()
    defined = ids(page)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert f"`{method.upper()} {path}`" in page
            assert endpoint.operation_anchor(method, path, operation) in defined
            section = page.split(f"{{#{endpoint.operation_anchor(method, path, operation)}}}")[1].split(
                "\n## "
            )[0]
            for status in operation["responses"]:
                assert f"| `{status}` |" in section, (method, path, status)
            for parameter in operation.get("parameters", []):
                assert f"| `{parameter['name']}` |" in section, (method, path, parameter["name"])
    for name in doc["components"]["schemas"]:
        assert endpoint.schema_anchor(name) in defined
    for name in doc["components"]["headers"]:
        assert endpoint.header_anchor(name) in defined
    for link in re.findall(r"\]\(#([^)]+)\)", page):
        assert link in defined, link


# --- metrics ------------------------------------------------------------------------------------------------


def test_every_metric_of_the_registry_is_documented(pages: dict[str, str]) -> None:
    page = pages["reference/metrics.md"]
    registry = Metrics(store=SnapshotStore([])).registry
    families = list(registry.collect())
    assert any(family.name.startswith("secrets_agent_") for family in families)
    rows = {re.findall(r'<a id="([^"]+)"', line)[0]: line for line in page.splitlines() if '<a id="' in line}
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in rows, name
        assert f"| {family.type} |" in rows[name], name
        for sample in family.samples:
            for label in sample.labels:
                if label not in ("le", "quantile"):
                    assert f"`{label}`" in rows[name], (name, label)
    # Labelled metrics with no child yet have no samples: their label names are the metric's own.
    for collector in registry._collector_to_names:
        if isinstance(collector, MetricWrapperBase):
            name = collector._name + ("_total" if collector._type == "counter" else "")
            for label in collector._labelnames:
                assert f"`{label}`" in rows[name], (name, label)


# --- annotations --------------------------------------------------------------------------------------------


def test_every_annotation_the_webhook_reads_is_documented(pages: dict[str, str]) -> None:
    page = pages["reference/annotations.md"]
    keys = list(webhook_annotations.GLOBAL_KEYS)
    keys += ["secret-<name>", *(f"secret-<name>-{option}" for option in shaping.SECRET_OPTIONS)]
    keys += ["template-<name>", *(f"template-<name>-{option}" for option in shaping.TEMPLATE_OPTIONS)]
    keys += ["select-<name>", *(f"select-<name>-{option}" for option in shaping.SELECT_OPTIONS)]
    assert sorted(pod_annotations.MEANINGS) == sorted(keys)
    for key in keys:
        assert f"`{key}` |" in page, key


def test_the_settings_annotations_set_are_real_settings(pages: dict[str, str]) -> None:
    settings = set(configuration.settings())
    for entry in pod_annotations.entries():
        for path in entry.sets:
            assert path in settings, (entry.pattern, path)
    links = re.findall(r"\]\(configuration\.md#([^)]+)\)", pages["reference/annotations.md"])
    assert links
    assert set(links) <= ids(pages["reference/configuration.md"])


def test_an_annotation_the_webhook_gains_fails_the_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_annotations, "GLOBAL_KEYS", (*webhook_annotations.GLOBAL_KEYS, "new-thing"))
    with pytest.raises(LookupError, match="new-thing"):
        pod_annotations.entries()


# --- Python API ---------------------------------------------------------------------------------------------


def test_the_python_api_page_lists_every_public_name(pages: dict[str, str]) -> None:
    page = pages["reference/python-api.md"]
    assert "::: agent.secrets" in page
    listed = re.findall(r"^ {8}- (\w+)$", page, flags=re.MULTILINE)
    assert listed == list(agent.secrets.__all__) == python_api.names()
