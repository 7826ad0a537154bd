"""One path for every call, whatever the transport: count it, inject faults, run it on the store.

The gRPC and REST adapters only translate wire formats; everything that makes the emulator behave like the
service (or misbehave on purpose) happens here or in the store.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import grpc

from agent_emulator.errors import EmulatorError
from agent_emulator.methods import METHODS, Method

_PROJECT = re.compile(r"^projects/([^/]+)")


class FaultInjector(Protocol):
    """Decides, per call, whether to delay it, fail it, or corrupt its payload checksum."""

    async def before_call(self, method: Method, project: str) -> None:
        """Sleep for configured latency; raise EmulatorError for an injected failure or exhausted quota."""

    def corrupt_crc(self, method: Method) -> bool:
        """True when this AccessSecretVersion response should carry a wrong ``data_crc32c``."""


class CallRecorder(Protocol):
    """Counts calls per method and resulting status code (for the admin API)."""

    def record(self, method: Method, code: grpc.StatusCode) -> None: ...


def project_of(request: Any) -> str:
    """The project a request addresses ('' when its name is malformed; the store then rejects it)."""
    for attr in ("name", "parent"):
        value = getattr(request, attr, None)
        if isinstance(value, str) and value:
            break
    else:
        secret = getattr(request, "secret", None)
        value = getattr(secret, "name", "") if secret is not None else ""
    match = _PROJECT.match(value or "")
    return match.group(1) if match else ""


class Dispatcher:
    def __init__(self, store: Any, faults: FaultInjector, recorder: CallRecorder) -> None:
        # store: the SecretStore; one method per RPC, named ``Method.store_attr``, found by name.
        self.store = store
        self.faults = faults
        self.recorder = recorder

    async def call(self, method_name: str, request: Any) -> Any:
        """Run one RPC; raises EmulatorError with the status the service would return."""
        method = METHODS.get(method_name)
        if method is None:
            raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, f"Method {method_name} is not implemented.")
        try:
            await self.faults.before_call(method, project_of(request))
            response = getattr(self.store, method.store_attr)(request)
            if method.name == "AccessSecretVersion" and self.faults.corrupt_crc(method):
                # Flip one bit: the payload is intact, the checksum lies, so clients must notice.
                response.payload.data_crc32c = (int(response.payload.data_crc32c) ^ 1) & 0xFFFFFFFF
        except EmulatorError as error:
            self.recorder.record(method, error.code)
            raise
        self.recorder.record(method, grpc.StatusCode.OK)
        return response
