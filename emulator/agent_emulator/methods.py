"""The table of SecretManagerService methods the emulator implements: one row per RPC.

gRPC and REST adapters, faults, quotas and call counters all key on ``Method.name`` (the gRPC method name,
e.g. ``AccessSecretVersion``), so a fault configured for a method applies whichever transport is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from google.cloud.secretmanager_v1 import types
from google.protobuf import empty_pb2

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"

QuotaKind = Literal["access", "read", "write"]
"""Secret Manager's three per-project per-minute quotas: access 90,000, read 600, write 600."""


@dataclass(frozen=True)
class Method:
    name: str
    """gRPC method name, e.g. ``AccessSecretVersion``."""
    request_type: Any
    """proto-plus request class (has ``serialize``/``deserialize``/``from_json``)."""
    response_type: Any
    """proto-plus response class, or ``None`` for ``google.protobuf.Empty``."""
    quota: QuotaKind
    store_attr: str
    """Name of the SecretStore method that implements it (snake_case of ``name``)."""


def _m(name: str, req: Any, resp: Any, quota: QuotaKind, attr: str) -> Method:
    return Method(name, req, resp, quota, attr)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _m("CreateSecret", types.CreateSecretRequest, types.Secret, "write", "create_secret"),
        _m("GetSecret", types.GetSecretRequest, types.Secret, "read", "get_secret"),
        _m("ListSecrets", types.ListSecretsRequest, types.ListSecretsResponse, "read", "list_secrets"),
        _m("UpdateSecret", types.UpdateSecretRequest, types.Secret, "write", "update_secret"),
        _m("DeleteSecret", types.DeleteSecretRequest, None, "write", "delete_secret"),
        _m(
            "AddSecretVersion",
            types.AddSecretVersionRequest,
            types.SecretVersion,
            "write",
            "add_secret_version",
        ),
        _m(
            "GetSecretVersion",
            types.GetSecretVersionRequest,
            types.SecretVersion,
            "read",
            "get_secret_version",
        ),
        _m(
            "ListSecretVersions",
            types.ListSecretVersionsRequest,
            types.ListSecretVersionsResponse,
            "read",
            "list_secret_versions",
        ),
        _m(
            "AccessSecretVersion",
            types.AccessSecretVersionRequest,
            types.AccessSecretVersionResponse,
            "access",
            "access_secret_version",
        ),
        _m(
            "EnableSecretVersion",
            types.EnableSecretVersionRequest,
            types.SecretVersion,
            "write",
            "enable_secret_version",
        ),
        _m(
            "DisableSecretVersion",
            types.DisableSecretVersionRequest,
            types.SecretVersion,
            "write",
            "disable_secret_version",
        ),
        _m(
            "DestroySecretVersion",
            types.DestroySecretVersionRequest,
            types.SecretVersion,
            "write",
            "destroy_secret_version",
        ),
    )
}


def serialize_response(method: Method, response: Any) -> bytes:
    """Wire bytes of a response; ``None`` responses are ``google.protobuf.Empty``."""
    if method.response_type is None:
        return _EMPTY
    return cast(bytes, method.response_type.serialize(response))


_EMPTY: bytes = cast(bytes, empty_pb2.Empty().SerializeToString())
