"""The sandbox as a security boundary: hostile templates (escapes toward Python objects, resource
exhaustion of every kind) end quickly in a TemplateError; the filters templates are given work; and no
failure, whatever it does with a secret value, ever shows that value in a message or a log record."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import time
import traceback
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from agent.render.bounded import MAX_RANGE
from agent.render.budget import MAX_INT_BITS, MAX_NESTING
from agent.render.pem import MAX_PKCS12_ITERATIONS
from agent.render.templates import TemplateError, TemplateInput, compile_template, render_template

CANARY = "CANARY-7d3a"
"""A secret value that no message or log record may ever show."""

INPUTS: dict[str, TemplateInput] = {
    "db": TemplateInput(json.dumps({"user": "app", "password": "pw", "hosts": ["a", "b"]}).encode(), "1"),
    "b": TemplateInput(CANARY.encode(), "1"),
    "a": TemplateInput(json.dumps({"password": CANARY, "list": [CANARY], "n": 3}).encode(), "1"),
    "raw": TemplateInput(b"\xff" + CANARY.encode(), "1"),
    "y": TemplateInput(f"key: {CANARY}\n".encode(), "1", "yaml"),
}
KNOWN = tuple(INPUTS)


def render(text: str, inputs: Mapping[str, TemplateInput] = INPUTS, **limits: Any) -> str:
    template = compile_template("t", text, known=(*KNOWN, *inputs))
    return render_template(template, inputs, **limits).decode()


def failure(text: str, inputs: Mapping[str, TemplateInput] = INPUTS, **limits: Any) -> TemplateError:
    """The TemplateError of ``text``, at compile or render time."""
    with pytest.raises(TemplateError) as caught:
        render_template(compile_template("t", text, known=(*KNOWN, *inputs)), inputs, **limits)
    return caught.value


def assert_clean(error: TemplateError) -> None:
    """Nothing of a value or of a Python object in the error, its repr or its formatted traceback."""
    shown = " ".join((str(error), repr(error), error.reason, "".join(traceback.format_exception(error))))
    assert CANARY not in shown
    assert " at 0x" not in shown
    assert "<" not in error.reason
    assert error.__cause__ is None
    assert error.__context__ is None


# --- reaching Python objects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ secrets.__class__ }}",
        "{{ secrets.db.__class__ }}",
        "{{ secrets.db._input.data }}",
        "{{ secrets.db['_input'] }}",
        "{{ secrets['db']['__class__'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner }}",
        "{{ lipsum.__globals__ }}",
        "{{ lipsum() }}",
        "{{ self._TemplateReference__context }}",
        "{{ self }}",
        "{{ config }}",
        "{{ request }}",
        "{{ namespace.__init__ }}",
        "{{ namespace.__init__.__globals__['os'] }}",
        "{{ dict.__init__ }}",
        "{{ dict.mro() }}",
        "{{ dict.fromkeys(range(3)) }}",
        "{{ range.__globals__ }}",
        "{{ range.__code__ }}",
        "{{ secrets.b.value|attr('__class__') }}",
        "{{ secrets.b.value.__len__() }}",
        "{{ secrets.b.value.encode.__self__ }}",
        "{{ (1).__class__ }}",
        "{% macro m() %}{% endmacro %}{{ m._func }}",
        "{% macro m() %}{% endmacro %}{{ m.__call__ }}",
        "{% for x in [1] %}{{ loop.__class__ }}{% endfor %}",
        "{% for x in [1] %}{{ loop._iterator }}{% endfor %}",
        "{{ (range(3)|map('string')).gi_frame }}",
        "{{ (range(3)|map('string')).gi_yieldfrom }}",
        "{{ '%s' % range }}",
        "{{ '%r' % secrets }}",
        "{{ '%s' % secrets.b }}",
        "{{ '%s'|format(namespace) }}",
        "{{ '{0.__class__}'.format(secrets.b.value) }}",
        "{{ '{0[__class__]}'.format(secrets.b.value) }}",
        "{{ '{0}'.format(range) }}",
        "{{ '{0!r}'.format(range) }}",
        "{{ '{0!s}'.format(secrets) }}",
        "{{ '{0!a:>5}'.format(namespace) }}",
        "{{ '{x.__class__}'.format_map({'x': 1}) }}",
        "{{ secrets.b.value|attr('format') }}",
        "{{ secrets.b.value.center(10) }}",
        "{{ ''|attr('zfill') }}",
        "{{ 'ab'.translate({97: 'x'}) }}",
        "{{ (1).to_bytes(4, 'big') }}",
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}{{ ns.__class__ }}",
        "{{ x|attr('__class__') }}",
        "{% include 'x' %}",
        "{% import 'x' as x %}",
        "{% extends 'x' %}",
    ],
)
def test_python_objects_are_out_of_reach(text: str) -> None:
    assert_clean(failure(text))


@pytest.mark.parametrize(
    "text",
    [
        "{{ range }}",
        "{{ namespace }}",
        "{{ dict }}",
        "{{ namespace(a=1) }}",
        "{{ range(3)|map('upper') }}",
        "{% macro m() %}{% endmacro %}{{ m }}",
        "{% for x in [1] %}{{ loop }}{% endfor %}",
        "{{ ''.upper }}",
        "{{ secrets.db.data.items() }}",
        "{{ 'x' ~ range }}",
        "{{ range|string }}",
        "{{ range|upper }}",
        "{{ [range]|join }}",
        "{{ range|tojson }}",
        "{{ [namespace]|to_yaml }}",
        "{{ range|e }}",
        "{{ secrets.b.bytes }}",
    ],
)
def test_objects_never_become_text(text: str) -> None:
    assert_clean(failure(text))


def test_the_methods_that_cannot_grow_their_input_work() -> None:
    text = (
        "{{ 'A,B'.lower().split(',') | join('-') }} {{ ' x '.strip() }} {{ 'abc'.startswith('a') }} "
        "{{ 'a-b'.replace('-', '+') }} {{ ','.join(['x', 'y']) }} {{ '{}:{:>3}'.format('k', 1) }} "
        "{{ secrets.db.data.get('nope', 'dflt') }} {{ secrets.db.data.keys() | list | length }} "
        "{{ [1, 2, 1].count(1) }} {{ 'é'.encode('utf-8') | length }}"
    )
    assert render(text) == "a-b x True a+b x,y k:  1 dflt 3 2 2"


# --- resource bounds -------------------------------------------------------------------------------------


HOSTILE: list[tuple[str, str]] = [
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "the output is larger than"),
    ("{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}", "the output is larger than"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "steps|longer"),
    (
        "{% for a in range(100000) %}{% for b in range(100000) if b < 0 %}{% endfor %}{% endfor %}",
        "steps|longer",
    ),
    ("{% macro f(n) %}{{ f(n - 1) }}{{ f(n - 1) }}{% endmacro %}{{ f(30) }}", "nest more than"),
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(35) }}",
        "steps|longer",
    ),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nest more than"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "nest more than"),
    ("{% for x in range(10**9) %}{% endfor %}", f"range() of more than {MAX_RANGE} numbers"),
    ("{{ range(10**9)|list }}", "range() of more than"),
    ("{{ 10 ** (10 ** 10) }}", f"more than {MAX_INT_BITS} bits"),
    ("{{ 2 ** 100000 }}", f"more than {MAX_INT_BITS} bits"),
    ("{% set n = 10 ** 4000 %}{{ n * n }}", f"more than {MAX_INT_BITS} bits"),
    ("{{ 'x' * 10**9 }}", "a repeated string or list would be larger than the output limit"),
    ("{{ 10**9 * 'x' }}", "a repeated string or list"),
    ("{{ [0] * 10**9 }}", "a repeated string or list"),
    ("{% set s = 'x' * 600000 %}{{ s + s }}", "a sum of strings or lists"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "a string joined with '~' would be larger",
    ),
    ("{{ '%999999999s' % 'x' }}", "a % format"),
    ("{{ '%999999s%999999s' % ('a', 'b') }}", "the result of a % format would be larger"),
    ("{{ '%*s' % (10**9, 'x') }}", "a % format"),
    ("{{ ('%(a)s' * 100) % {'a': 'x' * 100000} }}", "the result of a % format would be larger"),
    ("{{ '%999999s%999999s'|format('a', 'b') }}", "the result of a % format would be larger"),
    ("{{ '{:>1000000000}'.format('x') }}", "format(): a width or precision beyond the output limit"),
    ("{{ '{0:>999999}{0:>999999}'.format('x') }}", "the result of format() would be larger"),
    ("{{ '{:.999999999f}'.format(1.5) }}", "format(): a width or precision"),
    ("{{ 'x'|center(10**9) }}", "filter 'center': a number argument above"),
    ("{{ 'x'|truncate(10**9) }}", "filter 'truncate': a number argument above"),
    ("{{ ('a\n' * 200000)|indent(100) }}", "the indented text would be larger"),
    ("{{ ('a\n' * 200000)|indent('x' * 100) }}", "the indented text would be larger"),
    ("{{ ('a ' * 1000)|wordwrap(1, wrapstring='y' * 10000) }}", "the wrapped text would be larger"),
    ("{{ [1]|batch(10**6, 0)|list }}", "filter 'batch': a number argument above"),
    ("{{ []|slice(10**6)|list }}", "filter 'slice': a number argument above"),
    ("{{ (['x' * 1000] * 2000)|join }}", "the joined text would be larger"),
    ("{{ ('x' * 2000)|replace('', 'y' * 1000) }}", "the result of replace() would be larger"),
    ("{{ ('x' * 2000).replace('', 'y' * 1000) }}", "the result of replace() would be larger"),
    ("{{ ''.join(['x' * 1000] * 2000) }}", "the result of join() would be larger"),
    ("{{ ('x' * 600000)|list|list|list }}", "steps"),
    ("{{ 1.5|round(10**9) }}", "filter 'round': a number argument above 100"),
    ("{{ ([[0] * 1000] * 1000)|sum(start=[]) }}", "its start must be a number"),
    ("{{ secrets.db.data|to_json(indent=1000) }}", "indent is at most"),
    ("{{ [[[[['x' * 100000] * 10] * 10] * 10] * 10]|to_json }}", "the JSON would be larger"),
    ("{{ [[[[['x' * 100000] * 10] * 10] * 10] * 10]|tojson }}", "the JSON would be larger"),
    ("{{ range(20000)|map('string')|map('center', 60)|list|to_yaml }}", "the YAML would be larger"),
    (
        "{% set big = 'x'|center(999999) %}{% macro m() %}{% for i in range(1000) %}{{ big }}{% endfor %}"
        "{% endmacro %}{% set y = m() %}",
        "MiB of values",
    ),
    (
        "{% macro m() %}"
        + "y" * 100000
        + "{% endmacro %}{% for i in range(1000) %}{% set z = m() %}{% endfor %}",
        "MiB of values",
    ),
    (
        "{% set big = 'x'|center(999999) %}{% set l = ["
        + ", ".join(f"big[{i}:]" for i in range(100))
        + "] %}",
        "MiB of values",
    ),
    (
        "{% set big = 'x' * 1000000 %}{% for i in range(100) %}{% set c = big|upper %}{% endfor %}",
        "MiB of values",
    ),
]


@pytest.mark.parametrize(("text", "reason"), HOSTILE)
def test_hostile_templates_end_quickly_in_a_template_error(text: str, reason: str) -> None:
    started = time.monotonic()
    error = failure(text)
    assert time.monotonic() - started < 2.5
    assert any(part in error.reason for part in reason.split("|"))
    assert_clean(error)


def test_the_deadline_stops_a_template_that_stays_within_its_steps() -> None:
    text = "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    error = failure(text, max_seconds=0.2, max_steps=10**12)
    assert time.monotonic() - started < 1.0
    assert error.reason == "the template takes longer than 0.2 s"


def test_comparisons_of_large_values_are_charged_to_the_deadline() -> None:
    text = (
        "{% set a = 'x' * 1000000 %}{% set b = 'x' * 999999 ~ 'y' %}"
        "{% for i in range(100000) %}{% if a == b %}{% endif %}{% if b in a %}{% endif %}{% endfor %}"
    )
    started = time.monotonic()
    error = failure(text, max_seconds=0.3, max_steps=10**12)
    assert time.monotonic() - started < 1.5
    assert "longer than" in error.reason


def test_the_budgets_are_parameters() -> None:
    assert failure("{% for i in range(20) %}{% endfor %}", max_steps=10).reason.startswith(
        "the template takes more than 10 steps"
    )
    assert render("{% for i in range(20) %}{% endfor %}ok", max_steps=100) == "ok"
    assert "MiB of values" in failure("{{ 'x' * 100000 }}", max_memory=50_000).reason
    assert failure("{{ 'x' * 100 }}", max_output=10).reason.startswith("a repeated string")


def test_nesting_below_the_limit_works() -> None:
    depth = MAX_NESTING - 5
    macro = "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{% else %}bottom{% endif %}{% endmacro %}"
    text = macro + f"{{{{ m({depth}) }}}}"
    assert render(text) == "bottom"


def test_a_template_near_the_size_limits_compiles_and_renders_in_reasonable_time() -> None:
    text = "{{ secrets.db.data.user }}\n" * 3000
    started = time.monotonic()
    assert render(text) == "app\n" * 3000
    assert time.monotonic() - started < 5


# --- the filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ 'a:b'|b64encode }}", base64.b64encode(b"a:b").decode()),
        ("{{ secrets.raw.bytes|b64encode }}", base64.b64encode(b"\xff" + CANARY.encode()).decode()),
        ("{{ '\xff\xfe'|b64encode(urlsafe=true) }}", base64.urlsafe_b64encode("\xff\xfe".encode()).decode()),
        ("{{ 'YTpi'|b64decode }}", "a:b"),
        ("{{ 'YT\npi\n'|b64decode }}", "a:b"),
        ("{{ ('YTpi'|b64decode_bytes)|b64encode }}", "YTpi"),
        ('{{ \'{"a": [1, {"b": 2}]}\'|from_json|to_json }}', '{"a":[1,{"b":2}]}'),
        ("{{ {'b': 1, 'a': 'é'}|to_json(sort_keys=true) }}", '{"a":"é","b":1}'),
        ("{{ {'a': [1]}|to_json(indent=2) }}", '{\n  "a": [\n    1\n  ]\n}'),
        ("{{ {'a': '<'}|tojson }}", '{"a": "\\u003c"}'),
        ("{{ 'a: [1, 2]'|from_yaml|to_json }}", '{"a":[1,2]}'),
        ("{{ {'a': [1, 'x']}|to_yaml }}", "a:\n- 1\n- x\n"),
        ("{{ 'p@ss/w:rd'|urlquote }}", "p%40ss%2Fw%3Ard"),
        ("{{ 'a/b c'|urlquote(safe='/') }}", "a/b%20c"),
        ("{{ secrets.db.data|key('hosts[1]') }}", "b"),
        ("{{ secrets.db.value|key('/hosts/0') }}", "a"),
        ("{{ secrets.db.bytes|key('user') }}", "app"),
        ('{{ \'{"x.y": {"z": 1}}\'|key(\'["x.y"].z\') }}', "1"),
        ("{{ secrets.nope.value|default('none') }}", "none"),
        ("{{ [{'n': 'a'}, {'n': 'b'}]|join(',', attribute='n') }}", "a,b"),
        ("{{ [1, 2.5]|sum }}", "3.5"),
        ("{{ 'aaa'|replace('a', 'b', 2) }}", "bba"),
        ("{{ '%s=%d'|format('k', 3) }}", "k=3"),
        ("{{ 'x'|center(5) }}|{{ 'a\nb'|indent(2) }}|{{ 'a b c'|wordwrap(3) }}", "  x  |a\n  b|a b\nc"),
        ("{{ [1, 2, 3]|batch(2)|list }} {{ [1, 2, 3]|slice(2)|list }}", "[[1, 2], [3]] [[1, 2], [3]]"),
        ("{{ range(3)|map('string')|join('-') }}", "0-1-2"),
        ("{{ secrets.db.data|dictsort|first|join('=') }}", "hosts=['a', 'b']"),
    ],
)
def test_filters(text: str, expected: str) -> None:
    known = (*KNOWN, "nope")
    template = compile_template("t", text, known=known)
    assert render_template(template, INPUTS).decode() == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ 'not base64!'|b64decode }}", "b64decode: the text is not valid base64"),
        ("{{ '/w=='|b64decode }}", "b64decode: the decoded data is not UTF-8 text; use b64decode_bytes"),
        ("{{ '{'|from_json }}", "from_json: the payload is not valid JSON"),
        ("{{ 'a: [1'|from_yaml }}", "from_yaml: the payload is not valid YAML"),
        ("{{ secrets.db.data|key('nope') }}", "filter 'key': key 'nope' not found"),
        ("{{ secrets.db.data|key('a..b') }}", "filter 'key': key path 'a..b'"),
        ("{{ secrets.db|key('user') }}", "filter 'key': secret 'db' is not a document"),
        ("{{ secrets.b.bytes|to_json }}", "to_json: binary data has no JSON form"),
        ("{{ {(1, 2): 1}|to_json }}", "to_json: a mapping key that is not"),
        ("{{ [1, 'a']|sum }}", "filter 'sum' adds numbers, not a string"),
        ("{{ 'x'|int(base=99) + [] }}", "TypeError"),
    ],
)
def test_filter_failures(text: str, reason: str) -> None:
    error = failure(text)
    assert error.reason.startswith(reason) or reason in error.reason
    assert_clean(error)


def _certificate(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def tls() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return (
        leaf_key,
        _certificate(leaf_key, "leaf"),
        _certificate(ec.generate_private_key(ec.SECP256R1()), "ca"),
    )


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_pem_filters_take_the_blocks_of_a_bundle(
    tls: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate],
) -> None:
    key, leaf, ca = tls
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    bundle = ("junk\r\n" + _pem(leaf) + key_pem + _pem(ca)).replace("\n", "\r\n")
    inputs = {"b": TemplateInput(bundle.encode(), "1")}
    template = compile_template(
        "t",
        "{% for c in secrets.b.value|pem_certificates %}[{{ c }}]{% endfor %}"
        "{{ secrets.b.bytes|pem_private_key }}",
        known=["b"],
    )
    assert render_template(template, inputs).decode() == f"[{_pem(leaf)}][{_pem(ca)}]{key_pem}"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("no pem here", "filter 'pem_certificates': no CERTIFICATE block"),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n", "a PEM block without its END line"),
        ("-----BEGIN CERTIFICATE-----" * 40000, "a PEM block without its END line"),
    ],
)
def test_pem_failures(payload: str, reason: str) -> None:
    started = time.monotonic()
    error = failure("{{ secrets.b.value|pem_certificates }}", {"b": TemplateInput(payload.encode(), "1")})
    assert time.monotonic() - started < 1
    assert reason in error.reason


def test_pem_private_key_wants_exactly_one_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    template = "{{ secrets.b.value|pem_private_key }}"
    assert failure(template, {"b": TemplateInput(b"x", "1")}).reason.endswith("no private key block")
    doubled = {"b": TemplateInput((pem + pem).encode(), "1")}
    assert failure(template, doubled).reason.endswith("more than one private key block")
    assert render(template, {"b": TemplateInput(pem.encode(), "1")}) == pem


def _pkcs12(
    tls: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate], rounds: int = 2048
) -> bytes:
    key, leaf, ca = tls
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(b"pw")
    )
    return pkcs12.serialize_key_and_certificates(b"leaf", key, leaf, [ca], encryption)


def test_pkcs12_filters_give_pem(
    tls: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate],
) -> None:
    key, leaf, ca = tls
    data = _pkcs12(tls)
    inputs = {"p": TemplateInput(data, "1"), "t": TemplateInput(base64.b64encode(data), "1")}
    template = compile_template(
        "t",
        "{{ secrets.p.bytes|pkcs12_private_key('pw') }}"
        "{{ secrets.t.value|pkcs12_certificates(password='pw')|join }}",
        known=["p", "t"],
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert render_template(template, inputs).decode() == key_pem + _pem(leaf) + _pem(ca)


def test_pkcs12_failures(tls: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]) -> None:
    inputs = {"p": TemplateInput(_pkcs12(tls), "1"), "b": INPUTS["b"]}
    wrong = failure("{{ secrets.p.bytes|pkcs12_private_key('nope') }}", inputs)
    assert wrong.reason == "pkcs12: cannot read the PKCS#12 data (a wrong password, or not PKCS#12)"
    assert "not base64" in failure("{{ 'x!'|pkcs12_certificates }}").reason
    assert_clean(failure("{{ secrets.b.bytes|pkcs12_certificates }}", inputs))


def test_pkcs12_with_too_many_key_derivation_rounds_is_refused_before_deriving(
    tls: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate],
) -> None:
    inputs = {"p": TemplateInput(_pkcs12(tls, rounds=MAX_PKCS12_ITERATIONS * 20), "1")}
    started = time.monotonic()
    error = failure("{{ secrets.p.bytes|pkcs12_private_key('pw') }}", inputs)
    assert time.monotonic() - started < 0.5
    assert (
        error.reason == f"pkcs12: the data asks for more than {MAX_PKCS12_ITERATIONS} key-derivation rounds"
    )


def test_a_pkcs12_file_is_read_once_per_render(
    tls: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate],
) -> None:
    inputs = {"p": TemplateInput(_pkcs12(tls, rounds=200_000), "1")}
    text = "{% for i in range(50) %}{{ secrets.p.bytes|pkcs12_private_key('pw')|length > 0 }}{% endfor %}"
    started = time.monotonic()
    assert render(text, inputs) == "True" * 50
    assert time.monotonic() - started < 1.5


# --- canaries: no value in any message or log record -----------------------------------------------------

CANARY_TEMPLATES = [
    "{{ secrets.db.data[secrets.b.value] }}",
    "{{ secrets.a.data.list[secrets.b.value] }}",
    "{{ secrets[secrets.b.value].value }}",
    "{{ secrets.a.data[secrets.a.data.password ~ 'x'] }}",
    "{{ {secrets.b.value: 1}[secrets.b.value ~ '!'] }}",
    "{{ secrets.b.value|int(default=none) + 1 }}",
    "{{ secrets.b.value + 1 }}",
    "{{ 1 / secrets.b.value }}",
    "{{ secrets.b.value / 2 }}",
    "{{ secrets.b.value // 0 }}",
    "{{ secrets.a.data.n / 0 }}",
    "{{ secrets.b.value % 1 }}",
    "{{ secrets.b.value|format(1) }}",
    "{{ (secrets.b.value ~ '%(x)s') % {} }}",
    "{{ '%d' % secrets.b.value }}",
    "{{ '{:d}'.format(secrets.b.value) }}",
    "{{ secrets.b.value|from_json }}",
    "{{ secrets.y.value|from_json }}",
    "{{ secrets.b.value|from_yaml|key('x') }}",
    "{{ secrets.b.value|key('x') }}",
    "{{ secrets.a.data|key(secrets.b.value) }}",
    "{{ secrets.a.data|key(secrets.b.value ~ '..') }}",
    "{{ secrets.b.value.foo }}",
    "{{ secrets.b.value.foo.bar|upper }}",
    "{{ secrets.b.value[10**6] }}",
    "{{ secrets.a.data.password[100] }}",
    "{% if secrets.b.value > 3 %}{% endif %}",
    "{% if secrets.a.data.list > secrets.a.data.n %}{% endif %}",
    "{{ secrets.b.value|attr(secrets.b.value) }}",
    "{{ secrets.a.data|attr(secrets.b.value) }}",
    "{{ secrets.b.value|b64decode }}",
    "{{ secrets.raw.value }}",
    "{{ secrets.raw.bytes|b64decode }}",
    "{{ secrets.b.bytes }}",
    "{{ secrets.b.value|pkcs12_private_key }}",
    "{{ secrets.b.value|pem_certificates }}",
    "{{ secrets.b.value|pem_private_key }}",
    "{{ secrets.b.value|map(secrets.b.value)|list }}",
    "{{ secrets.b.value|select(secrets.b.value)|list }}",
    "{{ [secrets.a.data]|map(attribute=secrets.b.value)|join }}",
    "{{ ([secrets.a.data, secrets.db.data]|sort(attribute=secrets.b.value))[0] }}",
    "{{ secrets.b.value|batch(secrets.b.value, 1)|list }}",
    "{{ range(secrets.b.value) }}",
    "{{ secrets.b.value|center(secrets.b.value) }}",
    "{{ secrets.b.value|replace(1, 2, 'x') }}",
    "{{ secrets.b.value|round }}",
    "{{ secrets.b.value is divisibleby 3 }}",
    "{{ secrets.b.value() }}",
    "{% for x in secrets.b.value|int %}{% endfor %}",
    "{{ namespace(x=secrets.b.value).y }}",
    "{{ dict(**secrets.a.data).nope.deeper }}",
    "{{ {secrets.b.value: 1}.x }}",
    "{{ secrets.b.value * 10**6 }}",
    "{{ secrets.a.data.list * 10**7 }}",
    "{{ secrets.b.value ~ range }}",
    "{{ secrets.b.value.split(secrets.b.value, secrets.b.value) }}",
    "{{ secrets.b.value.encode(secrets.b.value) }}",
    "{{ secrets.b.value|to_json|from_json|from_json }}",
    "{{ secrets.y.data.key|float + [] }}",
    "{{ [secrets.b.value]|sum }}",
    "{{ secrets.a.data|to_yaml|from_json }}",
    "{{ secrets.b.value|urlencode + 1 }}",
    "{{ secrets.b.value|trim(1) }}",
    "{{ secrets.b.value.replace(secrets.b.value, 1) }}",
    "{{ secrets.b.value.join([1]) }}",
    "{{ '{0[' ~ secrets.b.value ~ ']}'.format({}) }}",
    "{{ ('{' ~ secrets.b.value ~ '}').format() }}",
    "{{ secrets.a.data.password|int(base=secrets.b.value) + [] }}",
    "{{ secrets.b.value|indent(secrets.a.data.list) }}",
]


@pytest.mark.parametrize("text", CANARY_TEMPLATES)
def test_no_failure_shows_a_secret_value(text: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    template = compile_template("t", text, known=KNOWN)
    with pytest.raises(TemplateError) as caught:
        render_template(template, INPUTS)
    assert_clean(caught.value)
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in (record.exc_text or "")
