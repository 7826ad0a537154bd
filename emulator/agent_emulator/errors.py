"""The one error type of the emulator: a gRPC status code and the message the real service would send."""

from __future__ import annotations

import grpc


class EmulatorError(Exception):
    """Raised by the store, faults and adapters; gRPC and REST each render it the way Google does."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"EmulatorError({self.code.name}, {self.message!r})"
