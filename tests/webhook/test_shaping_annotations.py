"""Output shaping from annotations: a secret's key, format, decode, deliver and extra key outputs, and
templates, each checked by the agent's own loader and ``check_outputs`` and refused naming its annotation.

Hostile input is the normal case: a template is compiled, never rendered, at a cost bounded by its code
(``limits.MAX_TEMPLATE_CODE``, counted with ``limits.template_code_size``, which never counts less than
Jinja2 reads as code); what the sandbox forbids is refused by the agent when it renders. Admitted pods are
run for real (``check-config``, ``init`` against the emulator) from the patch the webhook answered over HTTPS.
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.cloud import secretmanager_v1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import Environment

from agent.render.templates import TemplateError, TemplateInput, compile_template, render_template
from agent.webhook import limits
from agent.webhook.annotations import GLOBAL_KEYS
from agent.webhook.mutate import mutate
from agent.webhook.problems import InvalidAnnotations
from agent.webhook.settings import PREFIX, InjectorSettings
from agent.webhook.shaping import SECRET_OPTIONS, SELECT_OPTIONS, TEMPLATE_OPTIONS
from agent_emulator.server import EmulatorEndpoints
from tests.webhook.conftest import Webhook
from tests.webhook.helpers import DB_REF, PROJECT, agent_config, apply, find, make_pod, ours
from tests.webhook.test_server import admit, run_container, tmpfs_dir  # noqa: F401 - tmpfs_dir: a fixture

CANARY = "canary-shaping-91b4-if-you-read-this-it-leaked"
API_REF = f"projects/{PROJECT}/secrets/api-key"
PRIVATE: dict[str, Any] = {"securityContext": {"fsGroup": 2000}}


def admitted_config(values: dict[str, str], **spec: Any) -> dict[str, Any]:
    """The agent configuration injected for a pod with ``db`` and ``values``."""
    pod = apply(make_pod(ours({"inject": "true", "secret-db": DB_REF, **values}), **(spec or PRIVATE)))
    return agent_config(find(pod, "secrets-agent"))


def refusal(values: dict[str, str]) -> InvalidAnnotations:
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(
            make_pod(ours({"inject": "true", "secret-db": DB_REF, **values}), **PRIVATE), InjectorSettings()
        )
    return caught.value


# --- what the annotations become in the agent's configuration --------------------------------------------

SHAPED: list[tuple[str, dict[str, str], dict[str, Any], list[dict[str, Any]]]] = [
    (
        "one field of a JSON secret",
        {"secret-db-key-path": "db.password", "secret-db-format": "json"},
        {"key": "db.password", "format": "json"},
        [],
    ),
    (
        "a base64 payload",
        {"secret-db-decode": "base64"},
        {"decode": "base64"},
        [],
    ),
    (
        "key outputs in YAML flow style, the secret itself not delivered",
        {
            "secret-db-deliver": "false",
            "secret-db-key-outputs": "[{key: username, file: db/username, env: DB_USER}, {key: password, "
            'file: db/password, mode: "0400"}]',
        },
        {
            "deliver": False,
            "keys": [
                {"key": "username", "file": "db/username", "env": "DB_USER"},
                {"key": "password", "file": "db/password", "mode": "0400"},
            ],
        },
        [],
    ),
    (
        "key outputs in block YAML (a | annotation), a mode as written",
        {
            "secret-db-file": "db/all",
            "secret-db-key-outputs": '- key: labels["app.kubernetes.io/name"]\n  env: APP_NAME\n'
            "- key: /hosts/0\n  file: db/host\n  mode: 0400\n",
        },
        {
            "file": "db/all",
            "keys": [
                {"key": 'labels["app.kubernetes.io/name"]', "env": "APP_NAME"},
                {"key": "/hosts/0", "file": "db/host", "mode": "0400"},
            ],
        },
        [],
    ),
    (
        "key outputs in JSON",
        {"secret-db-key-outputs": '[{"key": "user", "env": "DB_USER"}]', "secret-db-deliver": "True"},
        {"keys": [{"key": "user", "env": "DB_USER"}]},
        [],
    ),
    (
        "a template with every option",
        {
            "template-db-url": "postgresql://{{ secrets.db.data.user }}:"
            "{{ secrets.db.data.password | urlquote }}@db:5432/app\n",
            "template-db-url-file": "config/db-url",
            "template-db-url-env": "DATABASE_URL",
            "template-db-url-mode": "0400",
            "template-db-url-secrets": "db",
        },
        {},
        [
            {
                "name": "db-url",
                "text": "postgresql://{{ secrets.db.data.user }}:"
                "{{ secrets.db.data.password | urlquote }}@db:5432/app\n",
                "file": "config/db-url",
                "env": "DATABASE_URL",
                "mode": "0400",
                "secrets": ["db"],
            }
        ],
    ),
    (
        "a format instead of a template, the pod's default mode",
        {"template-all": "", "template-all-format": "dotenv", "template-all-file": "all.env"},
        {},
        [{"name": "all", "format": "dotenv", "file": "all.env", "mode": "0440"}],
    ),
    (
        "a multi-line template with tabs, secrets listed with spaces",
        {
            "template-app": "db:\n\tpassword: {{ secrets.db.value }}\r\n",
            "template-app-file": "app.yaml",
            "template-app-secrets": " db , ",
        },
        {},
        [
            {
                "name": "app",
                "text": "db:\n\tpassword: {{ secrets.db.value }}\r\n",
                "file": "app.yaml",
                "mode": "0440",
                "secrets": ["db"],
            }
        ],
    ),
]


@pytest.mark.parametrize(("case", "values", "secret", "templates"), SHAPED, ids=[c[0] for c in SHAPED])
def test_shaping_annotations_become_the_agent_s_settings(
    case: str, values: dict[str, str], secret: dict[str, Any], templates: list[dict[str, Any]]
) -> None:
    config = admitted_config(values)
    (db,) = config["secrets"]
    assert db == {"name": "db", "ref": DB_REF, "mode": "0440", **secret}
    assert config.get("templates", []) == templates


def test_a_template_s_files_are_private_to_the_pod_like_the_secrets() -> None:
    config = admitted_config({"template-t": "{{ secrets.db.value }}", "template-t-file": "t"}, spec={})
    assert [t["mode"] for t in config["templates"]] == ["0444"]  # no user or group declared: as the secrets
    assert config["secrets"][0]["mode"] == "0444"


# --- the suffixes: options, never the end of a name -------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "option"),
    [("secret", option) for option in SECRET_OPTIONS] + [("template", option) for option in TEMPLATE_OPTIONS],
)
def test_a_name_cannot_end_in_an_option(family: str, option: str) -> None:
    # secret-x-<option> is always an option of x: with no secret-x (template-x) it is refused as such.
    error = refusal({f"{family}-x-{option}": "1"})
    (problem,) = [p for p in error.problems if p.annotation == f"{PREFIX}{family}-x-{option}"]
    assert problem.message.startswith(f"no {PREFIX}{family}-x annotation for this option")
    options = SECRET_OPTIONS if family == "secret" else TEMPLATE_OPTIONS
    assert all(f"-{o}" in problem.message for o in options)


def test_api_key_stays_a_secret_s_name() -> None:
    # Why the key option is -key-path: secret-api-key is the most common secret annotation there is.
    config = admitted_config({"secret-api-key": "sm://other-project/api-key"})
    assert [s["name"] for s in config["secrets"]] == ["api-key", "db"]


def test_the_caps_know_every_option() -> None:
    assert len(SECRET_OPTIONS) == limits.OPTIONS_PER_SECRET
    assert len(TEMPLATE_OPTIONS) == limits.OPTIONS_PER_TEMPLATE
    assert len(SELECT_OPTIONS) == limits.OPTIONS_PER_SELECTION
    assert limits.max_annotations(len(GLOBAL_KEYS)) == 1145


# --- refusals, each naming its annotation -----------------------------------------------------------------

REFUSED: list[tuple[str, dict[str, str], str, str]] = [
    # (case, annotations besides secret-db, the annotation refused, a fragment of the message)
    ("key path syntax", {"secret-db-key-path": "db..password"}, "secret-db-key-path", ""),
    ("payload format", {"secret-db-format": "xml"}, "secret-db-format", "auto, json, yaml"),
    ("decode", {"secret-db-decode": "hex"}, "secret-db-decode", "none, base64"),
    ("deliver", {"secret-db-deliver": "maybe"}, "secret-db-deliver", "expected true or false, got 'maybe'"),
    ("deliver like YAML", {"secret-db-deliver": "no"}, "secret-db-deliver", "expected true or false"),
    ("key outputs: not YAML", {"secret-db-key-outputs": "[{key: a"}, "secret-db-key-outputs", "invalid YAML"),
    (
        "key outputs: YAML error on line 2",
        {"secret-db-key-outputs": "- key: a\n  file: [\n"},
        "secret-db-key-outputs",
        "line 3: invalid YAML",
    ),
    (
        "key outputs: a mapping",
        {"secret-db-key-outputs": "{key: a}"},
        "secret-db-key-outputs",
        "a list of keys",
    ),
    ("key outputs: empty", {"secret-db-key-outputs": ""}, "secret-db-key-outputs", "a list of keys"),
    ("key outputs: two documents", {"secret-db-key-outputs": "[]\n---\n[]"}, "secret-db-key-outputs", "YAML"),
    (
        "key outputs: text items",
        {"secret-db-key-outputs": "[a, b]"},
        "secret-db-key-outputs",
        "[0]: expected a",
    ),
    (
        "key outputs: an owner",
        {"secret-db-key-outputs": "[{key: a, file: a, uid: 0}]"},
        "secret-db-key-outputs",
        "[0]: unknown field 'uid' (an item has key, file, env and mode)",
    ),
    (
        "key outputs: a field twice",
        {"secret-db-key-outputs": "[{key: a, file: a, file: b}]"},
        "secret-db-key-outputs",
        "[0].file: set twice",
    ),
    (
        "key outputs: a list for a value",
        {"secret-db-key-outputs": "[{key: [a], file: a}]"},
        "secret-db-key-outputs",
        "[0].key: expected text, got a list",
    ),
    (
        "key outputs: an alias to a mapping",
        {"secret-db-key-outputs": "[{key: a, file: &m {x: 1}}, {key: b, env: *m}]"},
        "secret-db-key-outputs",
        "[0].file: expected text, got a mapping",
    ),
    (
        "key outputs: nowhere to go",
        {"secret-db-key-outputs": "[{key: a}]"},
        "secret-db-key-outputs",
        "[0]: set file, env or both",
    ),
    (
        "key outputs: no key",
        {"secret-db-key-outputs": "[{file: a}]"},
        "secret-db-key-outputs",
        "[0].key: required",
    ),
    (
        "key outputs: key path syntax",
        {"secret-db-key-outputs": "[{key: a, file: a}, {key: 'b..c', file: b}]"},
        "secret-db-key-outputs",
        "[1].key: ",
    ),
    (
        "key outputs: env name",
        {"secret-db-key-outputs": "[{key: a, env: 'A B'}]"},
        "secret-db-key-outputs",
        "[0].env: ",
    ),
    (
        "key outputs: a reserved file",
        {"secret-db-key-outputs": "[{key: a, file: .token/a}]"},
        "secret-db-key-outputs",
        "[0].file: '.token/a': inside '.token'",
    ),
    (
        "key outputs: the output directory",
        {"secret-db-key-outputs": "[{key: a, file: ./}]"},
        "secret-db-key-outputs",
        "[0].file: names the output directory itself",
    ),
    (
        "key outputs: too deep",
        {"secret-db-key-outputs": "[{key: a, file: " + "d/" * limits.MAX_PATH_PARTS + "f}]"},
        "secret-db-key-outputs",
        f"[0].file: a path of more than {limits.MAX_PATH_PARTS} components",
    ),
    (
        "key outputs: the secret's own file",
        {"secret-db-file": "db/password", "secret-db-key-outputs": "[{key: a, file: db/password}]"},
        "secret-db-file",  # the second to claim it: the loader reads a secret's keys first
        f"duplicate file 'db/password': also used by {PREFIX}secret-db-key-outputs[0]",
    ),
    (
        "a secret's env taken by another's key output",
        {"secret-api": API_REF, "secret-db-key-outputs": "[{key: a, env: API}]"},
        "secret-db-key-outputs",
        f"also used by {PREFIX}secret-api",
    ),
    (
        "template: unknown secret",
        {"template-url": "x\n{{ secrets.dbb.value }}", "template-url-file": "url"},
        "template-url",
        "line 2: unknown secret 'dbb'; did you mean 'db'?",
    ),
    (
        "template: syntax",
        {"template-url": "{{ secrets.db.value", "template-url-file": "url"},
        "template-url",
        "line 1: unexpected end of template",
    ),
    (
        "template: a secret it may not see",
        {
            "secret-api": API_REF,
            "template-url": "{{ secrets.api.value }}",
            "template-url-file": "u",
            "template-url-secrets": "db",
        },
        "template-url",
        "unknown secret 'api'",
    ),
    (
        "template: unknown filter",
        {"template-url": "{{ secrets.db.value | shell }}", "template-url-file": "url"},
        "template-url",
        "unknown filter 'shell'",
    ),
    (
        "template: include",
        {"template-url": "{% include 'x' %}", "template-url-file": "url"},
        "template-url",
        "line 1: ",
    ),
    ("template: empty", {"template-url": " ", "template-url-file": "url"}, "template-url", "empty: give the"),
    (
        "template: text and a format",
        {"template-url": "x", "template-url-format": "json", "template-url-file": "url"},
        "template-url",
        "must be empty with secrets-agent.io/template-url-format",
    ),
    ("template: nowhere to go", {"template-url": "x"}, "template-url", "where should the output go?"),
    (
        "template: format",
        {"template-u": "", "template-u-format": "xml", "template-u-file": "u"},
        "template-u-format",
        "dotenv",
    ),
    (
        "template: mode",
        {"template-u": "x", "template-u-mode": "999", "template-u-file": "u"},
        "template-u-mode",
        "999",
    ),
    ("template: env", {"template-u": "x", "template-u-env": "A-B"}, "template-u-env", "'A-B'"),
    (
        "template: reserved file",
        {"template-u": "x", "template-u-file": ".notified"},
        "template-u-file",
        "record",
    ),
    (
        "template: inside a reserved file",
        {"template-u": "x", "template-u-file": ".token/u"},
        "template-u-file",
        "inside",
    ),
    (
        "template: the output directory",
        {"template-u": "x", "template-u-file": "."},
        "template-u-file",
        "itself",
    ),
    (
        "template: a secret's file",
        {"template-u": "x", "template-u-file": "db"},
        "template-u-file",
        f"{PREFIX}secret-db",
    ),
    (
        "template: unknown secret listed",
        {"template-u": "x", "template-u-file": "u", "template-u-secrets": "db,nope"},
        "template-u-secrets",
        "no secret is named 'nope'",
    ),
    (
        "template: no secret listed",
        {"template-u": "x", "template-u-file": "u", "template-u-secrets": " , "},
        "template-u-secrets",
        "comma-separated",
    ),
    (
        "template: a secret listed twice",
        {"template-u": "x", "template-u-file": "u", "template-u-secrets": "db,db"},
        "template-u-secrets",
        "twice",
    ),
    ("template: a NUL in the text", {"template-u": "a\x00b", "template-u-file": "u"}, "template-u", "NUL"),
    (
        "template: a line separator",
        {"template-u": "a\u2028b", "template-u-file": "u"},
        "template-u",
        "U+2028",
    ),
    (
        "template: two with one file",
        {"template-a": "a", "template-a-file": "f", "template-b": "b", "template-b-file": "f"},
        "template-b-file",
        f"duplicate file 'f': also used by {PREFIX}template-a",
    ),
    ("a newline in a single-line option", {"secret-db-env": "A\nB"}, "secret-db-env", "single-line"),
]


@pytest.mark.parametrize(("case", "values", "key", "fragment"), REFUSED, ids=[c[0] for c in REFUSED])
def test_shaping_problems_name_their_annotation(
    case: str, values: dict[str, str], key: str, fragment: str
) -> None:
    error = refusal(values)
    assert PREFIX + key in error.annotations, str(error)
    (message, *_) = [p.message for p in error.problems if p.annotation == PREFIX + key]
    assert fragment in message, message
    assert "secrets[" not in str(error)
    assert "templates[" not in str(error)


def test_a_template_naming_a_refused_secret_is_not_refused_for_it() -> None:
    # secret-api's reference is too long: it is reported once, and the template that uses it compiles
    # against a placeholder instead of being refused for an "unknown secret".
    error = refusal(
        {
            "secret-api": "r" * (limits.MAX_REFERENCE + 1),
            "template-u": "{{ secrets.api.value }}{{ secrets.db.value }}",
            "template-u-file": "u",
            "template-u-secrets": "api,db",
        }
    )
    assert error.annotations == (PREFIX + "secret-api",)


def test_options_of_a_refused_secret_wait_for_the_next_round() -> None:
    error = refusal({"secret-db-deliver": "perhaps", "secret-db-key-outputs": "[{key: a}]"})
    assert error.annotations == (PREFIX + "secret-db-deliver",)


def test_a_secret_s_reference_is_never_quoted_next_to_templates() -> None:
    error = refusal(
        {
            "secret-api": f"{CANARY} pasted in place of a reference",
            "template-u": "{{ secrets.api.value }}",
            "template-u-file": "u",
        }
    )
    assert PREFIX + "secret-api" in error.annotations
    assert CANARY not in str(error)


@pytest.mark.parametrize(
    ("key", "meant"), [("templat-url", "template-url"), ("templates-url-file", "template-url-file")]
)
def test_near_misses_of_template_are_suggested(key: str, meant: str) -> None:
    error = refusal({key: "x"})
    assert str(error) == f"{PREFIX}{key}: unknown annotation (did you mean {PREFIX}{meant}?)"


# --- the caps ---------------------------------------------------------------------------------------------


def templates(count: int, text: str = "{{ secrets.db.value }}") -> dict[str, str]:
    out: dict[str, str] = {}
    for index in range(count):
        out[f"template-t{index:02d}"] = text
        out[f"template-t{index:02d}-file"] = f"t/{index:02d}"
    return out


def test_the_most_templates_with_every_option_are_admitted() -> None:
    values = {"template-all": "", "template-all-format": "json", "template-all-file": "all.json"}
    for index in range(limits.MAX_TEMPLATES - 1):
        values.update(
            {
                f"template-t{index:02d}": "{{ secrets.db.value }}",
                f"template-t{index:02d}-file": f"t/{index:02d}",
                f"template-t{index:02d}-env": f"T{index:02d}",
                f"template-t{index:02d}-mode": "0400",
                f"template-t{index:02d}-secrets": "db",
            }
        )
    config = admitted_config(values)
    assert len(config["templates"]) == limits.MAX_TEMPLATES


def test_more_templates_than_the_cap_are_refused_and_none_is_compiled() -> None:
    error = refusal(templates(limits.MAX_TEMPLATES + 1, "{{ secrets.nope.value }}"))
    assert error.annotations == (PREFIX + "template-*",)
    assert f"{limits.MAX_TEMPLATES + 1} templates; at most {limits.MAX_TEMPLATES}" in str(error)


def test_a_template_past_its_length_is_refused_unquoted() -> None:
    text = CANARY * (limits.MAX_TEMPLATE_TEXT // len(CANARY) + 1)
    error = refusal({"template-t": text, "template-t-file": "t"})
    assert error.annotations == (PREFIX + "template-t",)
    assert f"longer than {limits.MAX_TEMPLATE_TEXT} characters" in str(error)
    assert CANARY not in str(error)


def test_text_around_the_code_does_not_count() -> None:
    text = "x" * (limits.MAX_TEMPLATE_TEXT - 40) + "{{ secrets.db.value }}"
    assert admitted_config({"template-t": text, "template-t-file": "t"})["templates"][0]["text"] == text


def code_of(size: int) -> str:
    unit = "{{ secrets.db.value }}"
    return unit * (size // len(unit)) + "x" * (size % len(unit))


@pytest.mark.parametrize("count", [1, 2, 8])
def test_template_code_up_to_the_cap_is_admitted(count: int) -> None:
    per = limits.MAX_TEMPLATE_CODE // count
    values = {k: code_of(per) if not k.endswith("-file") else v for k, v in templates(count).items()}
    assert sum(limits.template_code_size(v, 10**6) for k, v in values.items() if not k.endswith("-file")) <= (
        limits.MAX_TEMPLATE_CODE
    )
    assert len(admitted_config(values)["templates"]) == count


def test_one_template_past_the_code_cap_is_refused_by_name() -> None:
    error = refusal({"template-t": code_of(limits.MAX_TEMPLATE_CODE + 30), "template-t-file": "t"})
    assert error.annotations == (PREFIX + "template-t",)
    assert f"this template has more than {limits.MAX_TEMPLATE_CODE} characters of template code" in str(error)


def test_templates_past_the_code_cap_together_are_refused_as_one_problem() -> None:
    per = limits.MAX_TEMPLATE_CODE // 4 + 30
    values = {k: code_of(per) if not k.endswith("-file") else v for k, v in templates(5).items()}
    error = refusal(values)
    assert error.annotations == (PREFIX + "template-*",)
    assert "the templates have more than" in str(error)


def test_key_outputs_past_the_cap_are_refused() -> None:
    half = limits.MAX_KEY_OUTPUTS // 2 + 1
    items = ", ".join(f"{{key: k{i}, env: K{i}}}" for i in range(half))
    other = ", ".join(f"{{key: k{i}, env: L{i}}}" for i in range(half))
    error = refusal(
        {"secret-db-key-outputs": f"[{items}]", "secret-api": API_REF, "secret-api-key-outputs": f"[{other}]"}
    )
    assert error.annotations == (PREFIX + "secret-*-key-outputs",)
    assert f"{2 * half} key outputs in all; at most {limits.MAX_KEY_OUTPUTS}" in str(error)
    many = ", ".join(f"{{key: k{i}, env: K{i}}}" for i in range(limits.MAX_KEY_OUTPUTS + 1))
    assert refusal({"secret-db-key-outputs": f"[{many}]"}).annotations == (PREFIX + "secret-db-key-outputs",)


@pytest.mark.parametrize(
    ("pattern", "key"),
    [
        ("secret-<name>-key-path", "secret-db-key-path"),
        ("secret-<name>-key-outputs", "secret-db-key-outputs"),
        ("template-<name>", "template-t"),
        ("template-<name>-secrets", "template-t-secrets"),
        ("template-<name>-file", "template-t-file"),
    ],
)
def test_shaping_values_past_their_length_are_refused_unquoted(pattern: str, key: str) -> None:
    limit = limits.max_value(pattern)
    values = {"template-t": "x", "template-t-file": "t", key: CANARY * (limit // len(CANARY) + 1)}
    error = refusal(values)
    assert PREFIX + key in error.annotations
    assert f"longer than {limit} characters" in str(error)
    assert CANARY not in str(error)


# --- template code, counted: never less than Jinja2 reads as code -----------------------------------------

COUNTED = [
    ("plain text", "hello {x} 100% {", 0),
    ("one expression", "a{{ b }}c", 7),
    ("a statement", "{% if a %}x{% endif %}", 21),
    ("a comment", "{# {{ x }} #}y", 13),
    ("a closing delimiter in a string", '{{ "}}" ~ a|e|e }}z', 18),
    ("an escaped quote", r"{{ 'it\'s }}' ~ a }}z", 20),
    ("a dict literal ending like the block", '{{ {"a": {"b": 1}}}}z', 20),
    ("an open bracket takes the block on", "{{ ( }} a|e|e|e ) }}z", 20),
    ("a block that never ends", "x{{ a|e|e", 8),
    ("a raw section counts whole", "{% raw %}{{ {% endraw %}{{ a }}", 31),
    ("whitespace control", "{{- a -}} {%- if a +%}{%- endif -%}", 34),
]


@pytest.mark.parametrize(("case", "text", "size"), COUNTED, ids=[c[0] for c in COUNTED])
def test_template_code_is_counted_as_jinja_reads_it(case: str, text: str, size: int) -> None:
    assert limits.template_code_size(text, 10**6) == size


def test_counting_stops_past_the_budget() -> None:
    text = "{{ a }}" * 100_000
    assert (
        limits.MAX_TEMPLATE_CODE
        < limits.template_code_size(text, limits.MAX_TEMPLATE_CODE)
        < (limits.MAX_TEMPLATE_CODE + 20)
    )
    assert limits.template_code_size("{{ " + "(" * 100_000, 100) <= 110


JINJA = Environment()
PIECES = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "'",
    '"',
    "\\",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "a",
    " ",
    "|e",
    "~",
    "x\n",
]
PIECES += ["-", "+", "%", "raw", "endraw", "if", "endif", ","]


ENDS = frozenset({"variable_end", "block_end", "comment_end", "raw_end"})


def jinja_code(text: str) -> int:
    """Characters Jinja2's own lexer reads as code: every token but text, without the whitespace an end
    token such as ``-}}`` strips after itself (which it reads with a regular expression, and drops)."""
    code = 0
    for _, token, value in JINJA.lexer.tokeniter(text, None):
        if token != "data":
            code += len(value.rstrip()) if token in ENDS else len(value)
    return code


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_no_code_passes_for_text(text: str) -> None:
    try:
        expected = jinja_code(text)
    except Exception:  # a template Jinja2 refuses stops compiling where it fails
        return
    assert limits.template_code_size(text, 10**6) >= expected


# --- compiling costs what the code's length says ---------------------------------------------------------


class _TooCostly(BaseException):
    """Raised from the profiler: a BaseException, so that no ``except Exception`` of the code under test
    takes it for the template's own failure."""


def calls_of_review(values: dict[str, str], limit: int) -> int:
    """Python function calls a review makes (a measure of its work that no machine's speed changes),
    stopped once past ``limit``."""
    pod = make_pod(ours({"inject": "true", "secret-db": DB_REF, **values}), **PRIVATE)
    count = [0]

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "call":
            count[0] += 1
            if count[0] > limit:
                raise _TooCostly

    sys.setprofile(profile)
    try:
        mutate(pod, InjectorSettings())
    except _TooCostly:
        pass
    finally:
        sys.setprofile(None)
    return count[0]


CALLS_PER_CODE_CHARACTER = 100
"""Measured: 15 to 70 calls per character of code for every shape below once Jinja2's optimizer is off; it
folds constants by re-evaluating each subexpression at every level above it, a cost that grows with the
square of an expression's depth (``{{1|e|e|...}}`` of 320 filters: 120 s for 2 KiB)."""
COSTLY = [
    ("placeholders", "{{ secrets.db.value }}"),
    ("filters", "{{ secrets.db.value|e|e|e|e|e|e }}"),
    ("sums", "{{ 1+1+1+1+1+1+1+1+1+1 }}"),
    ("a filter chain", "{{1" + "|e" * 60 + "}}"),
    ("a long sum", "{{" + "+".join(["1"] * 150) + "}}"),
    ("a deep tuple", "{{" + "(" * 30 + "1" + ",)" * 30 + "}}"),
]


@pytest.mark.parametrize(("case", "unit"), COSTLY, ids=[c[0] for c in COSTLY])
def test_compiling_templates_costs_in_proportion_to_their_code(case: str, unit: str) -> None:
    base = calls_of_review({"template-t": "x", "template-t-file": "t"}, 10**7)
    text = unit * max(1, limits.MAX_TEMPLATE_CODE // len(unit))
    assert limits.template_code_size(text, 10**6) <= limits.MAX_TEMPLATE_CODE
    limit = base + CALLS_PER_CODE_CHARACTER * limits.MAX_TEMPLATE_CODE
    calls = calls_of_review({"template-t": text, "template-t-file": "t"}, limit)
    assert calls <= limit, (
        f"the review of {len(text)} characters of {case} made more than {limit} calls: compiling is no "
        "longer linear in the code (agent.render.sandbox: ENVIRONMENT must be built with optimized=False)"
    )


# --- the sandbox: admitted statically, refused at render --------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ secrets.db.value | attr('__class__') }}",
    "{% set n = '__cla' ~ 'ss__' %}{{ secrets.db.value[n] }}",
]


@pytest.mark.parametrize("text", ESCAPES)
def test_a_template_reaching_out_of_the_sandbox_is_admitted_but_never_rendered(text: str) -> None:
    # Syntactically fine and naming no unknown secret: the webhook admits it without rendering it ...
    config = admitted_config({"template-t": text, "template-t-file": "t"})
    assert config["templates"][0]["text"] == text
    # ... and the agent's sandbox refuses it when it renders, naming the template, never a value.
    compiled = compile_template("t", text, known=["db"])
    with pytest.raises(TemplateError) as caught:
        render_template(compiled, {"db": TemplateInput(CANARY.encode(), "1")})
    assert caught.value.template == "t"
    assert "not allowed" in caught.value.reason or "sandbox" in caught.value.reason
    assert CANARY not in str(caught.value)


# --- over HTTPS, and the injected agent run for real -------------------------------------------------------

SHAPING_POD = {
    "inject": "true",
    "mode": "init",
    "project": PROJECT,
    "secret-db": "db-credentials",
    "secret-db-format": "json",
    "secret-db-deliver": "false",
    "secret-db-key-outputs": "[{key: username, file: db/username, env: DB_USER}, "
    "{key: password, file: db/password, env: DB_PASSWORD}]",
    "secret-tls": "tls-key",
    "secret-tls-decode": "base64",
    "secret-tls-file": "tls/key.pem",
    "template-db-url": "postgresql://{{ secrets.db.data.username }}:{{ secrets.db.data.password | urlquote }}"
    "@db:5432/app",
    "template-db-url-file": "db/url",
    "template-db-url-env": "DATABASE_URL",
    "template-db-url-secrets": "db",
    "template-tls-json": "",
    "template-tls-json-format": "json",
    "template-tls-json-file": "tls/all.json",
    "template-tls-json-secrets": "tls",
    "env-file": "app.env",
}


async def test_a_refused_template_comes_back_over_https_naming_its_annotation(webhook: Webhook) -> None:
    values = {**SHAPING_POD, "template-db-url": "{{ secrets.db.data.username }}\n{{ secrets.dbb.value }}"}
    response, _ = await admit(webhook, make_pod(ours(values), **PRIVATE))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        f"{PREFIX}template-db-url: line 2: unknown secret 'dbb'; did you mean 'db'?"
    )


async def test_check_config_accepts_what_the_webhook_admits(webhook: Webhook) -> None:
    response, patched = await admit(webhook, make_pod(ours(SHAPING_POD), **PRIVATE))
    assert response["allowed"] is True
    init = find(patched, "secrets-agent-init")
    checked = run_container({**init, "args": ["check-config"]})
    assert checked.returncode == 0, checked.stderr
    config = yaml.safe_load(checked.stdout)
    db, tls = config["secrets"]
    assert (db["format"], db["deliver"], [k["key"] for k in db["keys"]]) == (
        "json",
        False,
        ["username", "password"],
    )
    assert (tls["decode"], tls["file"]) == ("base64", "tls/key.pem")
    assert [(t["name"], t["file"], t.get("format")) for t in config["templates"]] == [
        ("db-url", "db/url", None),
        ("tls-json", "tls/all.json", "json"),
    ]


@pytest.fixture
def shaping_secrets(client: secretmanager_v1.SecretManagerServiceClient) -> None:
    """The pod's two secrets in the emulator: a JSON document, and a key stored base64-encoded."""
    for secret_id, value in (
        ("db-credentials", json.dumps({"username": "app", "password": f"p@ss/{CANARY}"}).encode()),
        ("tls-key", base64.b64encode(f"-----BEGIN KEY-----{CANARY}".encode())),
    ):
        client.create_secret(
            request={
                "parent": f"projects/{PROJECT}",
                "secret_id": secret_id,
                "secret": {"replication": {"automatic": {}}},
            }
        )
        client.add_secret_version(
            request={"parent": f"projects/{PROJECT}/secrets/{secret_id}", "payload": {"data": value}}
        )


async def test_the_injected_init_container_writes_the_shaped_outputs(
    webhook: Webhook,
    emulator: EmulatorEndpoints,
    shaping_secrets: None,
    tmpfs_dir: Path,  # noqa: F811 - the fixture, imported
) -> None:
    _, patched = await admit(webhook, make_pod(ours(SHAPING_POD), securityContext={"runAsUser": 1000}))
    init = find(patched, "secrets-agent-init")
    done = run_container(
        init,
        env={
            "SECRET_MANAGER_EMULATOR_HOST": emulator.grpc_target,
            "SECRETS_AGENT_OUTPUT_DIR": str(tmpfs_dir),
        },
    )
    try:
        assert done.returncode == 0, done.stderr
        assert (tmpfs_dir / "db" / "username").read_text() == "app"
        assert (tmpfs_dir / "db" / "password").read_text() == f"p@ss/{CANARY}"
        assert (tmpfs_dir / "db" / "url").read_text() == f"postgresql://app:p%40ss%2F{CANARY}@db:5432/app"
        assert not (tmpfs_dir / "db-credentials").exists()
        assert not (tmpfs_dir / "db").is_file()
        assert (tmpfs_dir / "tls" / "key.pem").read_text() == f"-----BEGIN KEY-----{CANARY}"
        assert json.loads((tmpfs_dir / "tls" / "all.json").read_text()) == {
            "tls": f"-----BEGIN KEY-----{CANARY}"
        }
        assert stat.S_IMODE((tmpfs_dir / "db" / "url").stat().st_mode) == 0o440
        env = (tmpfs_dir / "app.env").read_text()
        assert "DB_USER='app'" in env
        assert "DATABASE_URL=" in env
        assert CANARY not in done.stdout + done.stderr
    finally:
        shutil.rmtree(tmpfs_dir)
