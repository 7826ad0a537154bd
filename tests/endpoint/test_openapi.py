"""agent/endpoint/openapi.json says what the server does: every route is documented, and schemathesis,
fuzzing the running server from the document, finds no 5xx and no status, header or body the document does
not allow."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from importlib.resources import files
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from agent.core.store import SnapshotStore
from agent.endpoint.application import build_endpoint_app
from agent.endpoint.token import TOKEN_HEADER
from tests.endpoint.conftest import (
    RENDERED,
    RENDERED_FILES,
    RENDERED_SPECS,
    SPECS,
    TOKEN,
    UNRENDERED_FILES,
    Endpoint,
    threaded_endpoint,
)

DOCUMENT: dict[str, Any] = json.loads(files("agent.endpoint").joinpath("openapi.json").read_text())

STREAM = ("/v1/events", "GET")
"""An endless stream: a fuzzed request would never finish; it is checked on its own below."""
FUZZED = sorted(
    (path, method.upper())
    for path, operations in DOCUMENT["paths"].items()
    for method in operations
    if (path, method.upper()) != STREAM
)

NEGATIVE = [
    (path, method) for path, method in FUZZED if DOCUMENT["paths"][path][method.lower()].get("parameters")
]
"""Operations that take parameters, so that invalid ones can be generated."""

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
DESIGNED_503 = {("name", "pending"), *(("path", path) for path in UNRENDERED_FILES)}
"""The path parameters whose answer is a 5xx by design: 503 + Retry-After, assigned but not fetched yet (a
secret), configured but not rendered yet (a file). Their answers are held to the document like all others,
minus the "not a server error" check."""


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = build_endpoint_app(
        store=SnapshotStore(SPECS), token=TOKEN, refresh=lambda: None, audit=False, max_wait=1.0
    )
    served = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.method != "*"
    }
    documented = {(path, method.upper()) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert served == documented


def test_the_token_is_an_api_key_header_required_everywhere_but_the_document() -> None:
    assert DOCUMENT["components"]["securitySchemes"]["token"] == {
        "type": "apiKey",
        "in": "header",
        "name": TOKEN_HEADER,
        "description": DOCUMENT["components"]["securitySchemes"]["token"]["description"],
    }
    assert DOCUMENT["security"] == [{"token": []}]
    assert DOCUMENT["paths"]["/openapi.json"]["get"]["security"] == []


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    # max_wait tiny: a generated `wait` with a matching If-None-Match (`*`) must not stall the run. A rendered
    # snapshot: keys, a `key:` secret, a `deliver: false` one, templates, a file not rendered yet.
    with threaded_endpoint(
        max_wait=0.05, specs=RENDERED_SPECS, initial=RENDERED, files=RENDERED_FILES
    ) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def schema() -> Any:
    return schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT)))


def fuzz(
    schema: Any,
    server_url: str,
    path: str,
    method: str,
    mode: GenerationMode,
    headers: dict[str, str],
    examples: int,
    names: list[str] | None = None,
    parameter: str = "name",
) -> set[int]:
    """Run ``examples`` generated requests against the server; return the statuses seen.

    ``names``: draw the path parameter ``parameter`` from these and ``format`` from raw/json (else
    schemathesis makes them up)."""
    operation = schema[path][method]
    statuses: set[int] = set()
    session = requests.Session()
    if names is None:
        strategy = operation.as_strategy(generation_mode=mode)
    else:
        # Both formats explicitly: left to itself the generator mostly omits the optional `format`.
        strategy = st.tuples(st.sampled_from(names), st.sampled_from(["raw", "json"])).flatmap(
            lambda pair: operation.as_strategy(
                generation_mode=mode, path_parameters={parameter: pair[0]}, query={"format": pair[1]}
            )
        )

    # derandomize: the same examples every run, so a failure reproduces and CI is stable.
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        # A copy: schemathesis adds its own headers to the mapping it is given.
        response = case.call(base_url=server_url, session=session, headers=dict(headers), timeout=10)
        statuses.add(response.status_code)
        # schemathesis keeps path parameters percent-encoded (`config%2Flater.env`).
        parameters = {(key, unquote(value)) for key, value in (case.path_parameters or {}).items()}
        designed = response.status_code == 503 and bool(parameters & DESIGNED_503)
        case.validate_response(response, checks=CHECKS[1:] if designed else CHECKS)

    try:
        with warnings.catch_warnings():
            # Only schemathesis' own notes about the document's generation limits; everything else stays
            # an error under filterwarnings=error.
            warnings.filterwarnings("ignore", module=r"schemathesis(\.|$)")
            run()
    finally:
        session.close()
    return statuses


@pytest.mark.parametrize(("path", "method"), FUZZED, ids=[f"{m} {p}" for p, m in FUZZED])
def test_fuzzing_with_the_token_finds_nothing_the_document_does_not_allow(
    schema: Any, server_url: str, path: str, method: str
) -> None:
    assert fuzz(schema, server_url, path, method, GenerationMode.POSITIVE, {TOKEN_HEADER: TOKEN}, 50)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzzing_reads_of_assigned_secrets(schema: Any, server_url: str, mode: GenerationMode) -> None:
    """Names the server knows (text, binary, not fetched yet, a `key:` field, deliver: false), with generated
    format, wait, If-None-Match."""
    names = [spec.name for spec in RENDERED_SPECS]
    statuses = fuzz(schema, server_url, "/v1/secrets/{name}", "GET", mode, {TOKEN_HEADER: TOKEN}, 80, names)
    # The run reached the interesting answers, not only refusals.
    assert {200, 404, 503} <= statuses if mode is GenerationMode.POSITIVE else 400 in statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzzing_reads_of_rendered_files(schema: Any, server_url: str, mode: GenerationMode) -> None:
    """Paths the server knows (a key's, a template's, a binary one, not rendered yet), with generated
    format, wait, If-None-Match."""
    paths = sorted(RENDERED_FILES)
    statuses = fuzz(
        schema,
        server_url,
        "/v1/files/{path}",
        "GET",
        mode,
        {TOKEN_HEADER: TOKEN},
        80,
        paths,
        parameter="path",
    )
    assert {200, 503} <= statuses if mode is GenerationMode.POSITIVE else 400 in statuses


@pytest.mark.parametrize(("path", "method"), NEGATIVE, ids=[f"{m} {p}" for p, m in NEGATIVE])
def test_fuzzing_invalid_parameters_finds_nothing_the_document_does_not_allow(
    schema: Any, server_url: str, path: str, method: str
) -> None:
    assert fuzz(schema, server_url, path, method, GenerationMode.NEGATIVE, {TOKEN_HEADER: TOKEN}, 50)


@pytest.mark.parametrize(("path", "method"), FUZZED, ids=[f"{m} {p}" for p, m in FUZZED])
@pytest.mark.parametrize(
    "headers",
    [{TOKEN_HEADER: "wrong-token-for-the-fuzzer"}, {TOKEN_HEADER: TOKEN, "X-Forwarded-For": "198.51.100.9"}],
    ids=["wrong token", "forwarded"],
)
def test_refusals_match_the_document_too(
    schema: Any, server_url: str, path: str, method: str, headers: dict[str, str]
) -> None:
    # Forwarded: refused before anything else; a wrong token: 403, except for the document (no token needed).
    expected = 400 if "X-Forwarded-For" in headers else 200 if path == "/openapi.json" else 403
    assert fuzz(schema, server_url, path, method, GenerationMode.POSITIVE, headers, 5) == {expected}


async def test_the_event_stream_answers_as_documented(endpoint: Endpoint) -> None:
    documented = DOCUMENT["paths"]["/v1/events"]["get"]["responses"]
    async with aiohttp.ClientSession() as http:
        async with http.get(endpoint.url("/v1/events"), headers=endpoint.auth()) as response:
            assert str(response.status) in documented
            assert response.headers["Content-Type"] in documented["200"]["content"]
            assert await asyncio.wait_for(response.content.readline(), 10) == b": connected\n"
        async with http.get(endpoint.url("/v1/events")) as response:
            assert str(response.status) in documented
            assert set(await response.json()) == {"error"}
