"""The one error type of the emulator: a gRPC status code and the message the real service would send."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"


@dataclass(frozen=True)
class ErrorInfo:
    """A ``google.rpc.ErrorInfo`` detail, as Google attaches to authentication and permission errors
    (``reason`` such as ``ACCESS_TOKEN_EXPIRED``, ``domain`` such as ``googleapis.com``)."""

    reason: str
    domain: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The detail as the JSON error body carries it (``@type`` first, as Google writes it)."""
        return {
            "@type": ERROR_INFO_TYPE,
            "reason": self.reason,
            "domain": self.domain,
            "metadata": dict(self.metadata),
        }


class EmulatorError(Exception):
    """Raised by the store, faults and adapters; gRPC and REST each render it the way Google does.

    ``info`` (optional) is sent as a ``google.rpc.ErrorInfo`` detail: in the JSON body over REST, in the
    ``grpc-status-details-bin`` trailer over gRPC (where google-api-core reads ``reason`` and ``domain``).
    """

    def __init__(self, code: grpc.StatusCode, message: str, info: ErrorInfo | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.info = info

    def __repr__(self) -> str:
        return f"EmulatorError({self.code.name}, {self.message!r})"
