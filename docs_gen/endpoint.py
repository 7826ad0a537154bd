"""reference/endpoint.md (and a copy of the document, reference/openapi.json), from the OpenAPI document
the agent serves at ``/openapi.json`` (``agent/endpoint/openapi.json``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from docs_gen.markdown import code, commonmark, page, table

SOURCE = "`agent/endpoint/openapi.json`"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def document_text() -> str:
    """The OpenAPI document as the agent ships it."""
    return resources.files("agent.endpoint").joinpath("openapi.json").read_text(encoding="utf-8")


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(document_text())
    return loaded


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(the component's name, the component) for a ``$ref``, else (None, node)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return None, node
    target: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return ref.rsplit("/", 1)[-1], target


def operation_anchor(method: str, path: str, operation: dict[str, Any]) -> str:
    """``getSecret``, or ``get-v1-secrets-name`` for an operation without an id."""
    operation_id = operation.get("operationId")
    if isinstance(operation_id, str):
        return operation_id
    return "-".join([method, *(p.strip("{}") for p in path.split("/") if p)])


def schema_anchor(name: str) -> str:
    return "schema-" + name


def header_anchor(name: str) -> str:
    return "header-" + name


def _md(text: object) -> str:
    # OpenAPI descriptions are CommonMark already.
    return commonmark(text)


def schema_type(doc: dict[str, Any], schema: dict[str, Any]) -> str:
    """A schema in a few words: ``string``, ``string (date-time)``, ``raw`` \\| ``json``, a link to a
    component schema, ``array of ...``."""
    name, resolved = _resolve(doc, schema)
    if name is not None:
        return f"[{name}](#{schema_anchor(name)})"
    if "enum" in resolved:
        return " \\| ".join(code(value) for value in resolved["enum"])
    kind = str(resolved.get("type", "any"))
    if kind == "array":
        return "array of " + schema_type(doc, resolved.get("items", {}))
    details = [str(resolved["format"])] if "format" in resolved else []
    if resolved.get("nullable"):
        details.append("or null")
    return kind + (f" ({', '.join(details)})" if details else "")


def _constraints(schema: dict[str, Any]) -> str:
    words = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "min"),
        ("maximum", "max"),
    ):
        if key in schema:
            words.append(f"{label} {schema[key]}")
    if "default" in schema:
        words.append(f"default {code(schema['default'])}")
    if "example" in schema:
        words.append(f"e.g. {code(schema['example'])}")
    return "; ".join(words)


def _parameters(doc: dict[str, Any], operation: dict[str, Any]) -> str:
    rows = []
    for raw in operation.get("parameters", []):
        _, parameter = _resolve(doc, raw)
        schema = parameter.get("schema", {})
        extra = _constraints(_resolve(doc, schema)[1])
        rows.append(
            [
                code(parameter["name"]),
                parameter["in"],
                "yes" if parameter.get("required") else "no",
                schema_type(doc, schema),
                _md(parameter.get("description")) + (f" ({extra})" if extra else ""),
            ]
        )
    if not rows:
        return ""
    return "**Parameters**\n\n" + table(["Name", "In", "Required", "Type", "Description"], rows)


def _responses(doc: dict[str, Any], operation: dict[str, Any]) -> str:
    rows = []
    for status, raw in operation.get("responses", {}).items():
        _, response = _resolve(doc, raw)
        content = response.get("content", {})
        bodies = [
            f"{code(media)}: {schema_type(doc, body.get('schema', {}))}" for media, body in content.items()
        ]
        headers = [
            f"[{code(header)}](#{header_anchor(_resolve(doc, value)[0] or header)})"
            for header, value in response.get("headers", {}).items()
        ]
        rows.append([code(status), _md(response.get("description")), "<br>".join(bodies), ", ".join(headers)])
    return "**Responses**\n\n" + table(["Status", "Description", "Body", "Headers"], rows)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) in the document's order."""
    return [
        (method, path, item[method])
        for path, item in doc.get("paths", {}).items()
        for method in METHODS
        if method in item
    ]


def _operation(doc: dict[str, Any], method: str, path: str, operation: dict[str, Any]) -> str:
    parts = [f"## {code(method.upper() + ' ' + path)} {{#{operation_anchor(method, path, operation)}}}"]
    if operation.get("summary"):
        parts.append(f"**{_md(operation['summary'])}.**")
    if operation.get("description"):
        parts.append(_md(operation["description"]))
    security = operation.get("security", doc.get("security", []))
    parts.append(
        "No token needed." if security == [] else "Needs the token ([authentication](#authentication))."
    )
    parts.append(_parameters(doc, operation))
    parts.append(_responses(doc, operation))
    return "\n\n".join(part for part in parts if part)


def _properties(doc: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows: list[list[str]] = []
    required = set(schema.get("required", []))
    for name, raw in schema.get("properties", {}).items():
        _, prop = _resolve(doc, raw)
        rows.append(
            [
                code(prefix + name),
                schema_type(doc, raw),
                "yes" if name in required else "no",
                _md(prop.get("description")),
            ]
        )
        items = prop.get("items", {})
        if prop.get("type") == "array" and "properties" in items:
            rows += _properties(doc, items, f"{prefix}{name}[].")
    return rows


def _components(doc: dict[str, Any]) -> list[str]:
    components = doc.get("components", {})
    parts: list[str] = []
    schemes = components.get("securitySchemes", {})
    if schemes:
        rows = [
            [
                code(name),
                scheme.get("type", ""),
                f"{scheme.get('in', '')} {code(scheme.get('name', ''))}",
                _md(scheme.get("description")),
            ]
            for name, scheme in schemes.items()
        ]
        parts.append(
            "## Authentication {#authentication}\n\n"
            + table(["Scheme", "Type", "Where", "Description"], rows)
        )
    headers = components.get("headers", {})
    if headers:
        rows = [
            [
                f'<a id="{header_anchor(name)}"></a>{code(_header_name(doc, name))}',
                "yes" if header.get("required") else "no",
                schema_type(doc, header.get("schema", {})),
                _md(header.get("description")),
            ]
            for name, header in headers.items()
        ]
        parts.append(
            "## Response headers {#headers}\n\n" + table(["Header", "Always", "Type", "Description"], rows)
        )
    schemas = components.get("schemas", {})
    if schemas:
        parts.append("## Schemas {#schemas}")
        for name, schema in schemas.items():
            section = [f"### {code(name)} {{#{schema_anchor(name)}}}"]
            if schema.get("description"):
                section.append(_md(schema["description"]))
            rows = _properties(doc, schema)
            if rows:
                section.append(table(["Field", "Type", "Required", "Description"], rows))
            parts.append("\n\n".join(section))
    return parts


def _header_name(doc: dict[str, Any], component: str) -> str:
    """The HTTP name a header component is sent as (the name the responses use for it)."""
    for _, _, operation in operations(doc):
        for raw in operation.get("responses", {}).values():
            _, response = _resolve(doc, raw)
            for header, value in response.get("headers", {}).items():
                if value.get("$ref", "").rsplit("/", 1)[-1] == component:
                    return str(header)
    return component


def render() -> str:
    """The whole page."""
    doc = document()
    info = doc.get("info", {})
    servers = ", ".join(code(server["url"]) for server in doc.get("servers", []))
    intro = [
        f"The {_md(info.get('title'))}.",
        _md(info.get("description")),
        f"OpenAPI {doc.get('openapi')}, API version {code(info.get('version'))}; default server {servers}. "
        "The document itself: [openapi.json](openapi.json) (the agent also serves it at `/openapi.json`).",
    ]
    listing = table(
        ["Method and path", "Summary"],
        [
            [
                f"[{code(method.upper() + ' ' + path)}](#{operation_anchor(method, path, operation)})",
                _md(operation.get("summary")),
            ]
            for method, path, operation in operations(doc)
        ],
    )
    sections = [
        *intro,
        listing,
        *(_operation(doc, method, path, operation) for method, path, operation in operations(doc)),
        *_components(doc),
    ]
    return page("Endpoint reference", SOURCE, *sections)
