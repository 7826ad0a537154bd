"""Templates as the configuration uses them: compiled once (every problem found with its line), rendered to
UTF-8 from the secrets they name, with ``secrets.NAME.value / .bytes / .version / .data`` and optional
secrets; every failure a TemplateError naming the template and the line, never a value."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from agent.errors import AgentError
from agent.render.templates import (
    MAX_TEMPLATE_BYTES,
    MAX_TEMPLATE_NODES,
    CompiledTemplate,
    TemplateError,
    TemplateInput,
    check_template,
    compile_template,
    render_template,
)

DB = TemplateInput(
    json.dumps(
        {"user": "app", "password": "s3cr=t/+", "key.with.dots": "dotted", "hosts": ["a", "b"]}
    ).encode(),
    "7",
    "json",
)
INPUTS: dict[str, TemplateInput] = {
    "db": DB,
    "token": TemplateInput(b"tok-123\n", "2"),
    "cfg": TemplateInput(b"primary:\n  password: yaml-pass\n", "3", "yaml"),
    "blob": TemplateInput(base64.b64encode(b"\xff\xfe binary"), "4", decode="base64"),
}
KNOWN = (*INPUTS, "cache")


def render(text: str, inputs: Mapping[str, TemplateInput] = INPUTS, **limits: Any) -> str:
    template = compile_template("t", text, known=KNOWN)
    return render_template(template, inputs, **limits).decode()


def failure(text: str, inputs: Mapping[str, TemplateInput] = INPUTS) -> TemplateError:
    template = compile_template("t", text, known=KNOWN)
    with pytest.raises(TemplateError) as caught:
        render_template(template, inputs)
    return caught.value


def compile_failure(text: str, known: tuple[str, ...] = KNOWN) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        compile_template("t", text, known=known)
    return caught.value


# --- what a template sees --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ secrets.token.value }}", "tok-123\n"),
        ("{{ secrets.token.version }}", "2"),
        ('{{ secrets["token"]["value"] }}', "tok-123\n"),
        ("{{ secrets.db.data.password }}", "s3cr=t/+"),
        ('{{ secrets.db.data["key.with.dots"] }}', "dotted"),
        ("{{ secrets.db.data.hosts[1] }}", "b"),
        ("{{ secrets.db.data.hosts | join(',') }}", "a,b"),
        ("{{ secrets.cfg.data.primary.password }}", "yaml-pass"),
        ("{{ secrets.blob.bytes | b64encode }}", base64.b64encode(b"\xff\xfe binary").decode()),
        ("{{ secrets.token.bytes | length }}", "8"),
        (
            "postgres://{{ secrets.db.data.user | urlquote }}:{{ secrets.db.data.password | urlquote }}@h/db",
            "postgres://app:s3cr%3Dt%2F%2B@h/db",
        ),
        ("{% for name in secrets %}{{ name }} {% endfor %}", "blob cfg db token "),
        ("{{ 'token' in secrets }}", "True"),
    ],
)
def test_a_template_reads_its_secrets(text: str, expected: str) -> None:
    assert render(text) == expected


def test_the_output_is_utf8_and_keeps_the_trailing_newline() -> None:
    template = compile_template("t", "{{ 'é' }}ü\n", known=())
    assert render_template(template, {}) == "éü\n".encode()


def test_an_absent_optional_secret_is_undefined_but_usable_with_default_and_defined() -> None:
    text = (
        '{{ secrets.cache.value | default("none") }}|'
        "{% if secrets.cache is defined %}yes{% else %}no{% endif %}"
    )
    assert render(text) == "none|no"
    with_cache = {**INPUTS, "cache": TemplateInput(b"hot", "1")}
    assert render(text, with_cache) == "hot|yes"


def test_a_view_can_be_the_default_of_another() -> None:
    assert render("{{ (secrets.cache | default(secrets.token)).version }}") == "2"


@pytest.mark.parametrize(
    "text",
    ["{{ secrets.cache.value }}", "{{ secrets.cache }}", "{% for x in secrets.cache.data %}{% endfor %}"],
)
def test_using_an_absent_secret_names_it(text: str) -> None:
    error = failure(text)
    assert error.reason == "secret 'cache' is not available"
    assert error.line == 1


def test_a_view_has_only_its_four_attributes() -> None:
    assert failure("{{ secrets.db.items }}").reason == (
        "secret 'db' has no attribute 'items'; it has value, bytes, version and data"
    )
    assert "not allowed" in failure("{{ secrets.db._input }}").reason
    assert "not allowed" in failure("{{ secrets.db['_name'] }}").reason
    assert failure("{{ secrets.db }}").reason == "secret 'db' is not text: use secrets.db.value"
    assert "'secrets' is not text" in failure("{{ secrets }}").reason
    assert failure("{{ secrets.db|list }}").reason == "secret 'db' cannot be iterated"


def test_a_secret_that_is_not_utf8_has_no_value_but_has_bytes() -> None:
    assert failure("{{ secrets.blob.value }}").reason == (
        "secret 'blob' is not UTF-8 text; use .bytes with b64encode"
    )


def test_data_of_a_payload_that_does_not_parse_fails_with_the_keys_message() -> None:
    broken = {"db": TemplateInput(b"{not json", "1", "json")}
    reason = failure("{{ secrets.db.data.x }}", broken).reason
    assert reason.startswith("secret 'db': the payload is not valid JSON")


def test_a_missing_key_is_named_when_the_template_wrote_it() -> None:
    assert failure("{{ secrets.db.data.nope }}").reason == "key 'nope' is missing from a mapping"
    assert failure("{{ secrets.db.data['no.pe'] }}").reason == "key 'no.pe' is missing from a mapping"
    assert failure("{{ secrets.db.data.hosts[5] }}").reason == "key 5 is missing from a list"


def test_a_missing_key_computed_from_a_value_is_not_named() -> None:
    reason = failure("{{ secrets.db.data[secrets.token.value] }}").reason
    assert reason == "a key computed from a value is missing from a mapping"
    # even when the computed key equals a literal of the template
    inputs = {**INPUTS, "token": TemplateInput(b"nope", "1")}
    assert failure("{{ 'nope' }}{{ secrets.db.data[secrets.token.value] }}", inputs).reason == reason


# --- uses, and the compile-time checks -------------------------------------------------------------------


def test_uses_lists_the_secrets_named_statically() -> None:
    template = compile_template("t", '{{ secrets.db.value }}{{ secrets["token"].value }}', known=KNOWN)
    assert template.uses == frozenset({"db", "token"})
    assert compile_template("t", "static text", known=KNOWN).uses == frozenset()


@pytest.mark.parametrize(
    "text",
    [
        "{% for n in secrets %}{{ secrets[n].value }}{% endfor %}",
        "{{ secrets[secrets.token.value].value }}",
        "{% set s = secrets %}{{ s.db.value }}",
        "{{ secrets | length }}",
    ],
)
def test_uses_is_none_when_secrets_is_looked_up_dynamically(text: str) -> None:
    assert compile_template("t", text, known=KNOWN).uses is None


def test_an_unknown_secret_is_found_at_compile_time_with_its_line_and_a_suggestion() -> None:
    error = compile_failure("line 1\nline 2\n{{ secrets.dbb.value }}")
    assert (error.template, error.line) == ("t", 3)
    assert error.reason == "unknown secret 'dbb'; did you mean 'db'?"
    assert str(error) == "template 't' line 3: unknown secret 'dbb'; did you mean 'db'?"
    assert compile_failure('{{ secrets["zzz"].value }}').reason == "unknown secret 'zzz'"


def test_the_suggestion_is_bounded_for_long_names_and_many_known_names() -> None:
    known = tuple(f"secret-{i}" for i in range(5000))
    assert compile_failure("{{ secrets['secret-x'].value }}", known).reason.startswith("unknown secret")
    long_name = "s" * 100_000
    assert (
        compile_failure(f"{{{{ secrets['{long_name}'].value }}}}").reason == f"unknown secret {long_name!r}"
    )


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            "ok\n{{ secrets.db.value | b64enocde }}",
            2,
            "unknown filter 'b64enocde'; did you mean 'b64encode'?",
        ),
        ("{% if secrets.db is definde %}{% endif %}", 1, "unknown test 'definde'; did you mean 'defined'?"),
        ("\n\n{{ secret.db.value }}", 3, "unknown name 'secret'"),
        ("{{ config }}", 1, "unknown name 'config'"),
        ("{% include 'other' %}", 1, "{% include %} is not available"),
        ("{% extends 'base' %}", 1, "{% extends %} is not available"),
        ("{% import 'm' as m %}", 1, "{% import %} is not available"),
        ("{% from 'm' import x %}", 1, "{% from ... import %} is not available"),
        ("{% autoescape true %}x{% endautoescape %}", 1, "{% autoescape %} is not available"),
        ("{{ self }}", 1, "'self' is not available in templates"),
        ("{% set secrets = 1 %}", 1, "'secrets' cannot be assigned"),
        ("a\n{% if %}", 2, "Expected an expression"),
        ("{{ 1 + }}", 1, "unexpected"),
    ],
)
def test_compile_time_problems_have_their_line(text: str, line: int, reason: str) -> None:
    error = compile_failure(text)
    assert error.line == line
    assert reason in error.reason


def test_check_template_lists_every_problem_in_line_order() -> None:
    text = "{{ secrets.dbb.value }}\n{{ secrets.db.value | nofilter }}\n{{ nobody }}\n{% include 'x' %}"
    problems = check_template("t", text, known=KNOWN)
    assert [(p.line, p.reason.split(":")[0].split(";")[0]) for p in problems] == [
        (1, "unknown secret 'dbb'"),
        (2, "unknown filter 'nofilter'"),
        (3, "unknown name 'nobody'"),
        (4, "{% include %} is not available"),
    ]
    assert check_template("t", "{{ secrets.db.value }}", known=KNOWN) == []
    assert [p.line for p in check_template("t", "ok\n{% for %}", known=KNOWN)] == [2]


def test_a_template_larger_than_the_limit_is_refused() -> None:
    error = compile_failure("x" * (MAX_TEMPLATE_BYTES + 1))
    assert error.line is None
    assert str(error).startswith(f"template 't': the template is larger than {MAX_TEMPLATE_BYTES} bytes")
    compile_template("t", "x" * MAX_TEMPLATE_BYTES, known=())


def test_a_template_with_too_many_elements_or_too_deep_is_refused() -> None:
    many = compile_failure("{{ 1" + " + 1" * MAX_TEMPLATE_NODES + " }}")
    assert many.reason == f"the template has more than {MAX_TEMPLATE_NODES} elements"
    assert "nests too deeply" in compile_failure("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}").reason
    assert "nests too deeply" in compile_failure("{% if 1 %}" * 2000 + "{% endif %}" * 2000).reason


def test_template_error_is_an_agent_error_and_compiled_template_hides_its_internals() -> None:
    template = compile_template("db-url", "{{ secrets.db.value }}", known=KNOWN)
    assert isinstance(template, CompiledTemplate)
    assert repr(template) == "CompiledTemplate(name='db-url', uses=frozenset({'db'}))"
    assert "s3cr" not in repr(DB)
    assert issubclass(TemplateError, AgentError)


# --- render failures and their lines ---------------------------------------------------------------------


def test_a_render_failure_has_the_line_of_the_failing_expression() -> None:
    error = failure("one\ntwo\n{{ secrets.db.data.nope }}\nfour")
    assert str(error) == "template 't' line 3: key 'nope' is missing from a mapping"


def test_a_failure_inside_a_macro_has_the_macro_line() -> None:
    text = "a\n{% macro m(x) %}\n  {{ x.missing }}\n{% endmacro %}\n\n{{ m(secrets.db.data) }}"
    assert failure(text).line == 3


def test_a_failure_inside_a_loop_body_has_its_line() -> None:
    text = "{% for h in secrets.db.data.hosts %}\n{{ h }}\n{{ h + 1 }}\n{% endfor %}"
    error = failure(text)
    assert error.line == 3
    assert error.reason.startswith("an expression failed (TypeError")


def test_output_too_large_has_the_line_writing_it() -> None:
    template = compile_template(
        "t", "head\n{% for i in range(1000) %}\n{{ 'x' * 100 }}{% endfor %}", known=()
    )
    with pytest.raises(TemplateError) as caught:
        render_template(template, {}, max_output=10_000)
    assert caught.value.reason == "the output is larger than 10000 bytes"
    assert caught.value.line == 3
    assert len(render_template(template, {}, max_output=200_000)) == 5 + 1000 * 101


def test_output_that_is_not_unicode_is_refused() -> None:
    inputs = {"db": TemplateInput(b'{"s": "\\ud800"}', "1", "json")}
    error = failure("{{ secrets.db.data.s }}", inputs)
    assert error.reason == "the output has text that is not Unicode (an unpaired surrogate)"


def test_each_render_has_its_own_budget() -> None:
    template = compile_template("t", "{% for i in range(900) %}{% endfor %}ok", known=())
    for _ in range(3):
        assert render_template(template, {}, max_steps=1000) == b"ok"


def test_a_render_deep_in_the_stack_fails_cleanly_with_recursion_too_deep() -> None:
    template = compile_template(
        "t", "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(30) }}", known=()
    )
    depth = 0
    frame = sys._getframe()
    while frame.f_back is not None:
        frame, depth = frame.f_back, depth + 1
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 120)
    try:
        with pytest.raises(TemplateError) as caught:
            render_template(template, {})
    finally:
        sys.setrecursionlimit(limit)
    assert caught.value.reason == "recursion is too deep (a macro calling itself?)"
    assert render_template(template, {}) == b""


def test_str_format_takes_any_keyword_name() -> None:
    template = compile_template("t", "{{ '{text}-{environment}'.format(text=1, environment=2) }}", known=())
    assert render_template(template, {}) == b"1-2"
