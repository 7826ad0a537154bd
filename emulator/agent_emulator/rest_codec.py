"""JSON <-> protobuf for the REST API, with Google's rules and Google's error wording.

Requests: the body (and query parameters) are checked against the request's descriptor field by field before
``json_format`` parses them, so a mistake is reported the way Google's front end reports it
(``Invalid JSON payload received. Unknown name "x" at 'secret': Cannot find field.``,
``Invalid value at 'payload.data' (TYPE_BYTES)``) instead of as a protobuf library message. Values are never
echoed back: a wrong value may well be the secret itself.

Responses: ``json_format`` with camelCase names, int64 as strings, bytes as base64 - what Google sends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from agent_emulator import bounded
from agent_emulator.errors import EmulatorError

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted (1 MiB); a 64 KiB payload is about 87 KiB of JSON."""

SYSTEM_PARAMETERS = frozenset(
    {
        "alt",
        "$alt",
        "prettyPrint",
        "$prettyPrint",
        "fields",
        "$fields",
        "key",
        "$key",
        "access_token",
        "oauth_token",
        "quotaUser",
        "$quotaUser",
        "userIp",
        "callback",
        "$callback",
        "$.xgafv",
        "upload_protocol",
        "uploadType",
    }
)
"""Google's system parameters: accepted on every URL, never bound to request fields."""

_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_TYPE_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "TYPE_DOUBLE",
    FieldDescriptor.TYPE_FLOAT: "TYPE_FLOAT",
    FieldDescriptor.TYPE_INT64: "TYPE_INT64",
    FieldDescriptor.TYPE_UINT64: "TYPE_UINT64",
    FieldDescriptor.TYPE_INT32: "TYPE_INT32",
    FieldDescriptor.TYPE_FIXED64: "TYPE_FIXED64",
    FieldDescriptor.TYPE_FIXED32: "TYPE_FIXED32",
    FieldDescriptor.TYPE_BOOL: "TYPE_BOOL",
    FieldDescriptor.TYPE_STRING: "TYPE_STRING",
    FieldDescriptor.TYPE_BYTES: "TYPE_BYTES",
    FieldDescriptor.TYPE_UINT32: "TYPE_UINT32",
    FieldDescriptor.TYPE_SFIXED32: "TYPE_SFIXED32",
    FieldDescriptor.TYPE_SFIXED64: "TYPE_SFIXED64",
    FieldDescriptor.TYPE_SINT32: "TYPE_SINT32",
    FieldDescriptor.TYPE_SINT64: "TYPE_SINT64",
}
# Whatever json_format (or the protobuf runtime under it) raises for a value it cannot take.
_PARSE_FAILURES = (json_format.ParseError, ValueError, TypeError, OverflowError, UnicodeError)


class RestInputError(EmulatorError):
    """A request the REST layer rejects before it reaches the service (bad JSON, bad URL, too large).

    ``field`` (when known) is reported as a ``google.rpc.BadRequest`` field violation, as Google does;
    ``http_status`` overrides the status that ``code`` maps to (413 for an oversized body).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.field = field
        self.http_status = http_status


def invalid(message: str, field: str | None = None) -> RestInputError:
    """An INVALID_ARGUMENT for bad input, optionally naming the offending field."""
    return RestInputError(grpc.StatusCode.INVALID_ARGUMENT, message, field=field)


@dataclass(frozen=True)
class OutputFormat:
    """How the response JSON is written, from the ``alt``/``$alt``/``prettyPrint`` system parameters."""

    enums_as_ints: bool = False
    """``$alt=json;enum-encoding=int`` (what the official REST client sends): enums as numbers."""
    pretty: bool = True
    """Google pretty-prints unless ``prettyPrint=false``."""


def output_format(query: Mapping[str, str]) -> OutputFormat:
    """Read the system parameters that shape the response; reject values Google would not serve as JSON."""
    enums_as_ints = False
    for name in ("alt", "$alt"):
        if name not in query:
            continue
        kind, *options = query[name].split(";")
        if kind != "json":
            raise invalid(f"Unsupported value for system parameter '{name}': only 'json' is served.", name)
        for option in options:
            key, _, value = option.partition("=")
            if key != "enum-encoding" or value not in ("int", "string"):
                raise invalid(f"Unsupported option in system parameter '{name}'.", name)
            enums_as_ints = value == "int"
    pretty = True
    for name in ("prettyPrint", "$prettyPrint"):
        if name in query:
            if query[name] not in ("true", "false"):
                raise invalid(f"Invalid value for system parameter '{name}': expected true or false.", name)
            pretty = query[name] == "true"
    return OutputFormat(enums_as_ints=enums_as_ints, pretty=pretty)


# ---- request bodies ---------------------------------------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body (an empty body is ``{}``)."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
        value = bounded.loads_json(text)
    except UnicodeDecodeError:
        raise invalid("Invalid JSON payload received. The body is not valid UTF-8.") from None
    except json.JSONDecodeError as error:
        # error.msg describes the syntax problem without quoting the document.
        raise invalid(
            f"Invalid JSON payload received. {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except bounded.InputError as error:
        # Nested too deep, a number too long, NaN: said plainly, still without quoting the document.
        reason = error.reason[:1].upper() + error.reason[1:]
        raise invalid(f"Invalid JSON payload received. {reason}.") from None
    except ValueError:
        raise invalid("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(value, dict):
        raise invalid('Invalid JSON payload received. Unknown name "": Root element must be a message.')
    return value


def _json_keys(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A field is addressed by its JSON (lowerCamel) name or by its proto (snake_case) name."""
    keys: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        keys[field.name] = field
        keys[field.json_name] = field
    return keys


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return f"type.googleapis.com/{field.message_type.full_name}"
    if field.enum_type is not None:
        return f"type.googleapis.com/{field.enum_type.full_name}"
    return _TYPE_NAMES.get(field.type, "TYPE_UNKNOWN")


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unknown_name(key: str, path: str, reason: str) -> RestInputError:
    where = f" at '{path}'" if path else ""
    return invalid(f'Invalid JSON payload received. Unknown name "{key}"{where}: {reason}', path or key)


def _invalid_value(field: FieldDescriptor, path: str) -> RestInputError:
    return invalid(f"Invalid value at '{path}' ({_type_name(field)})", path)


def check_message(value: Any, descriptor: Descriptor, path: str) -> None:
    """Raise RestInputError, worded as Google words it, for the first thing in ``value`` that the message
    ``descriptor`` cannot take: unknown names, wrong JSON types, two members of one oneof, bad scalars."""
    fields = _json_keys(descriptor)
    oneofs_seen: dict[str, str] = {}
    fields_seen: set[str] = set()
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            raise _unknown_name(key, path, "Cannot find field.")
        if field.name in fields_seen:
            raise invalid(
                f"Invalid JSON payload received. Field '{_child(path, field.name)}' is set twice.",
                _child(path, field.name),
            )
        fields_seen.add(field.name)
        if item is None:
            continue  # null means "default", as in proto3 JSON
        oneof = field.containing_oneof
        if oneof is not None and not _is_synthetic(field):
            if oneof.name in oneofs_seen:
                raise invalid(
                    f"Invalid JSON payload received. Oneof field '{_child(path, oneof.name)}' is already "
                    f"set. Cannot set '{field.name}'.",
                    _child(path, field.name),
                )
            oneofs_seen[oneof.name] = field.name
        _check_field(item, field, descriptor, key, path)


def _is_synthetic(field: FieldDescriptor) -> bool:
    # proto3 ``optional`` fields live in a synthetic oneof of one; it never conflicts.
    oneof = field.containing_oneof
    return oneof is not None and len(oneof.fields) == 1 and oneof.name == f"_{field.name}"


def _check_field(value: Any, field: FieldDescriptor, parent: Descriptor, key: str, parent_path: str) -> None:
    path = _child(parent_path, field.name)
    if _is_map(field):
        if isinstance(value, list):
            raise _unknown_name(key, parent_path, "Proto field is not repeating, cannot start list.")
        if not isinstance(value, dict):
            raise _invalid_value(field, path)
        value_field = field.message_type.fields_by_name["value"]
        for map_key, map_value in value.items():
            entry_path = f"{path}[{map_key}]"
            if value_field.message_type is not None and not _is_well_known(value_field):
                if not isinstance(map_value, dict):
                    raise _invalid_value(value_field, entry_path)
                check_message(map_value, value_field.message_type, entry_path)
            else:
                _check_scalar_shape(map_value, value_field, entry_path)
                _trial_parse(parent, field, {map_key: map_value}, entry_path, value_field)
        return
    if _is_repeated(field):
        if not isinstance(value, list):
            raise _invalid_value(field, path)
        for index, element in enumerate(value):
            _check_single(element, field, parent, f"{path}[{index}]", repeated=True)
        return
    if isinstance(value, list):
        raise _unknown_name(key, parent_path, "Proto field is not repeating, cannot start list.")
    _check_single(value, field, parent, path, repeated=False)


def _check_single(
    value: Any, field: FieldDescriptor, parent: Descriptor, path: str, *, repeated: bool
) -> None:
    if field.message_type is not None and not _is_well_known(field):
        if not isinstance(value, dict):
            raise _invalid_value(field, path)
        check_message(value, field.message_type, path)
        return
    _check_scalar_shape(value, field, path)
    _trial_parse(parent, field, [value] if repeated else value, path, field)


def _is_well_known(field: FieldDescriptor) -> bool:
    # Timestamp, Duration, FieldMask, wrappers, Struct...: JSON scalars/objects with their own rules,
    # which json_format implements exactly.
    return field.message_type is not None and field.message_type.full_name.startswith("google.protobuf.")


def _check_scalar_shape(value: Any, field: FieldDescriptor, path: str) -> None:
    # Objects only suit well-known types (Struct, ...); lists only repeated fields, handled by the caller.
    if isinstance(value, dict | list) and not (_is_well_known(field) and isinstance(value, dict)):
        raise _invalid_value(field, path)
    # Python's base64 decoder silently skips characters outside the alphabet; Google does not.
    if field.type == FieldDescriptor.TYPE_BYTES and not _valid_base64(value):
        raise _invalid_value(field, path)


def _valid_base64(value: Any) -> bool:
    return isinstance(value, str) and bool(_BASE64.match(value)) and len(value.rstrip("=")) % 4 != 1


def _trial_parse(
    parent: Descriptor, field: FieldDescriptor, value: Any, path: str, reported: FieldDescriptor
) -> None:
    """Let json_format judge one value (int64 as string, enum names, Timestamp syntax...) on a scratch
    message, so that its verdict can be reported with the field's path instead of the library's text."""
    scratch = GetMessageClass(parent)()
    try:
        json_format.ParseDict({field.json_name: value}, scratch)
    except _PARSE_FAILURES:
        raise _invalid_value(reported, path) from None


def merge_body(body: dict[str, Any], target: Message, path: str) -> None:
    """Check ``body`` against ``target``'s type and merge it in (``path`` names ``target`` in errors)."""
    check_message(body, target.DESCRIPTOR, path)
    try:
        json_format.ParseDict(body, target)
    except _PARSE_FAILURES:
        # check_message should have caught it; never let library text (which may quote values) out.
        raise invalid("Invalid JSON payload received.", path or None) from None


# ---- query parameters -------------------------------------------------------------------------------------


def _cannot_bind(key: str, reason: str) -> RestInputError:
    return invalid(
        f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter. {reason}'
    )


def _snake_case(segment: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", segment).lower()


def field_mask_paths(value: str) -> list[str]:
    """``updateMask`` paths, comma separated, in lowerCamel or snake_case (Google accepts both)."""
    paths = []
    for raw in value.split(","):
        path = raw.strip()
        if not path:
            continue
        paths.append(".".join(_snake_case(segment) for segment in path.split(".")))
    return paths


def merge_query(
    query: Iterable[tuple[str, str]], target: Message, bound: frozenset[str], body_is_whole_request: bool
) -> None:
    """Bind query parameters (``pageSize=2``, ``updateMask=labels``, ``secret.etag=...``) to request fields.

    ``bound`` holds the top-level fields the path or body already carry; binding those, or anything when the
    body is the whole request, is an error as with Google.
    """
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        if key not in SYSTEM_PARAMETERS:
            grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        if body_is_whole_request:
            raise _cannot_bind(key, "The request body carries every field of this method.")
        message = target
        names = key.split(".")
        path = ""
        for position, name in enumerate(names):
            field = _json_keys(message.DESCRIPTOR).get(name)
            if field is None:
                raise _cannot_bind(key, f"Field '{key}' could not be found in request message.")
            path = _child(path, field.name)
            if position == 0 and field.name in bound:
                raise _cannot_bind(key, f"Field '{field.name}' is set by the URL path or the request body.")
            if position < len(names) - 1:
                if field.message_type is None or _is_repeated(field) or _is_well_known(field):
                    raise _cannot_bind(key, f"Field '{path}' is not a message.")
                message = getattr(message, field.name)
                continue
            _bind_query_value(message, field, values, key, path)


def _bind_query_value(
    message: Message, field: FieldDescriptor, values: list[str], key: str, path: str
) -> None:
    if _is_map(field) or (field.message_type is not None and not _is_well_known(field)):
        raise _cannot_bind(key, f"Field '{path}' is a message; query parameters bind scalar fields only.")
    if len(values) > 1 and not _is_repeated(field):
        raise invalid(
            f"Invalid JSON payload received. Repeated values for non-repeated field '{path}'.", path
        )
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.FieldMask":
        # json_format insists on lowerCamel mask paths; Google also takes snake_case in the URL.
        getattr(message, field.name).paths.extend(field_mask_paths(values[0]))
        return
    converted: list[Any] = []
    for value in values:
        if field.type == FieldDescriptor.TYPE_BOOL:
            if value not in ("true", "false"):
                raise _invalid_value(field, path)
            converted.append(value == "true")
        else:
            _check_scalar_shape(value, field, path)
            converted.append(value)
    try:
        json_format.ParseDict({field.json_name: converted if _is_repeated(field) else converted[0]}, message)
    except _PARSE_FAILURES:
        raise _invalid_value(field, path) from None


def set_path_field(target: Message, dotted: str, value: str) -> None:
    """Set the request field the URL path variable binds (``name``, ``parent``, ``secret.name``)."""
    *parents, leaf = dotted.split(".")
    message = target
    for name in parents:
        message = getattr(message, name)
    setattr(message, leaf, value)


# ---- responses --------------------------------------------------------------------------------------------


def render(message: Message | None, fmt: OutputFormat) -> bytes:
    """Response JSON as Google writes it; ``None`` (google.protobuf.Empty) is ``{}``."""
    document: dict[str, Any] = {}
    if message is not None:
        document = json_format.MessageToDict(message, use_integers_for_enums=fmt.enums_as_ints)
    return dump(document, fmt.pretty)


def dump(document: Mapping[str, Any], pretty: bool = True) -> bytes:
    """JSON bytes, pretty-printed like Google's responses unless asked otherwise."""
    return (json.dumps(document, indent=2 if pretty else None, ensure_ascii=False) + "\n").encode("utf-8")
